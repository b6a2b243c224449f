//! Whole-database backups with Postgres' own tools: a cluster archiving its WAL to a folder, base backups of it (`pg_basebackup`), and a new cluster recovered from a base backup and the archive up to a target LSN (point-in-time recovery), as docs/RELIABILITY.md's runbook does it.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use crate::{NEXT_DIR, PgCluster, PgOptions, Result, err, id_of};

/// A folder the server's user may write (WAL segments, a base backup),
/// removed when dropped.
#[derive(Debug)]
pub struct ServerDir {
    path: PathBuf,
}

impl ServerDir {
    /// A new, empty folder in the temp dir, `tag` in its name, owned by
    /// the server's user (`postgres` when this process is root), mode 0700.
    pub fn new(tag: &str) -> Result<ServerDir> {
        let path = std::env::temp_dir().join(format!(
            "arbor-{tag}-{}-{}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).map_err(|e| err(format!("mkdir {path:?}: {e}")))?;
        if crate::is_root() {
            let (uid, gid) = (id_of("-u", "postgres")?, id_of("-g", "postgres")?);
            std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                .map_err(|e| err(format!("chown {path:?}: {e}")))?;
        }
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| err(format!("chmod {path:?}: {e}")))?;
        }
        Ok(ServerDir { path })
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The names of the files in it, sorted.
    pub fn files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.path)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

impl Drop for ServerDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The `archive_command` that copies each finished WAL segment into
/// `archive`, refusing to overwrite one (the runbook's).
pub fn archive_command(archive: &Path) -> String {
    let dir = archive.display();
    format!("test ! -f '{dir}/%f' && cp '%p' '{dir}/%f'")
}

/// The `restore_command` that reads segments back from `archive`.
pub fn restore_command(archive: &Path) -> String {
    format!("cp '{}/%f' '%p'", archive.display())
}

impl PgCluster {
    /// [`PgCluster::start`], then restarted with `archive_mode = on` and
    /// [`archive_command`] into `archive` (in its `postgresql.conf`;
    /// `wal_level` is Postgres' default, `replica`).
    pub fn start_archiving(options: PgOptions, archive: &ServerDir) -> Result<PgCluster> {
        let cluster = PgCluster::start(options)?;
        cluster.append_conf(&format!(
            "archive_mode = on\narchive_command = '{}'\n",
            archive_command(archive.path()).replace('\'', "''")
        ))?;
        cluster.stop_server()?;
        cluster.pg_ctl_start()?;
        Ok(cluster)
    }

    /// `pg_basebackup` of this cluster into a new folder: plain format, the
    /// WAL it needs streamed into it (`-X stream`), a fast checkpoint first.
    pub fn base_backup(&self) -> Result<ServerDir> {
        let dir = ServerDir::new("base")?;
        let target = dir.path().join("base");
        let port = self.port.to_string();
        self.run(
            "pg_basebackup",
            &[
                "-D".as_ref(),
                target.as_os_str(),
                "-h".as_ref(),
                self.root.as_os_str(),
                "-p".as_ref(),
                port.as_ref(),
                "-U".as_ref(),
                crate::USER.as_ref(),
                "-X".as_ref(),
                "stream".as_ref(),
                "--checkpoint=fast".as_ref(),
            ],
        )?;
        Ok(dir)
    }

    /// A new cluster recovered from `base` (a [`PgCluster::base_backup`])
    /// and the WAL in `archive`, up to and including `target_lsn`, then
    /// promoted (a new timeline; it does not archive). Its server accepts
    /// connections once consistent; recovery may still be replaying: wait
    /// for `pg_is_in_recovery()` to turn false.
    pub fn recover(
        options: PgOptions,
        base: &ServerDir,
        archive: &ServerDir,
        target_lsn: &str,
    ) -> Result<PgCluster> {
        // A cluster of its own (socket dir, watcher), its data replaced by
        // the base backup.
        let cluster = PgCluster::start(options)?;
        cluster.stop_server()?;
        let data = cluster.data_dir();
        std::fs::remove_dir_all(&data).map_err(|e| err(format!("rm {data:?}: {e}")))?;
        cluster.run_as_server(
            "cp",
            &[
                "-a".as_ref(),
                base.path().join("base").as_os_str(),
                data.as_os_str(),
            ],
        )?;
        cluster.append_conf(&format!(
            "archive_mode = off\nrestore_command = '{}'\nrecovery_target_lsn = '{}'\n\
             recovery_target_action = 'promote'\n",
            restore_command(archive.path()).replace('\'', "''"),
            target_lsn.replace('\'', "''")
        ))?;
        cluster.run_as_server("touch", &[data.join("recovery.signal").as_os_str()])?;
        cluster.pg_ctl_start()?;
        Ok(cluster)
    }

    /// Appends `lines` to the cluster's `postgresql.conf` (later settings
    /// win; the file keeps its owner).
    fn append_conf(&self, lines: &str) -> Result<()> {
        use std::io::Write as _;
        let path = self.data_dir().join("postgresql.conf");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(lines.as_bytes()))
            .map_err(|e| err(format!("appending to {path:?}: {e}")))
    }

    /// `pg_ctl stop -m fast` (the watcher still owns the dir).
    fn stop_server(&self) -> Result<()> {
        let data = self.data_dir();
        self.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-m".as_ref(),
                "fast".as_ref(),
                "-w".as_ref(),
                "stop".as_ref(),
            ],
        )
    }

    /// Runs a system `program` as the server's user.
    fn run_as_server(&self, program: &str, args: &[&std::ffi::OsStr]) -> Result<()> {
        let command = if self.as_postgres {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--", program]);
            c
        } else {
            std::process::Command::new(program)
        };
        crate::run_command(program, command, args)
    }
}
