//! `arbor`: the command-line client over `arbor-client` (a replica file,
//! local edits that work offline, sync with a server).
//!
//! ```text
//! arbor --db a.db init --server http://127.0.0.1:8080 --space demo --token $TOKEN
//! arbor --db a.db add "first item"
//! arbor --db a.db sync
//! arbor --db a.db tree
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, bail};
use arbor_client::{Position, Replica, SyncConfig, SyncState, SyncStatus};
use arbor_shared::NodeId;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "arbor",
    version,
    about = "Arbor replica: edit offline, sync with a server"
)]
struct Cli {
    /// The replica file.
    #[arg(long, env = "ARBOR_DB", default_value = "arbor.db", global = true)]
    db: PathBuf,
    /// Token (else the one stored by `init`).
    #[arg(long, env = "ARBOR_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

/// Where a node goes among its siblings (default: last).
#[derive(clap::Args, Clone, Default)]
struct Pos {
    /// First among the siblings.
    #[arg(long, conflicts_with_all = ["before", "after"])]
    first: bool,
    /// Right before this sibling.
    #[arg(long, conflicts_with = "after")]
    before: Option<String>,
    /// Right after this sibling.
    #[arg(long)]
    after: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Bind the replica to a server and thoughtspace.
    Init {
        /// Server base URL.
        #[arg(long)]
        server: String,
        /// Thoughtspace name.
        #[arg(long)]
        space: String,
        /// Replicate only this node's subtree (default: the token's `root`
        /// claim, if it has one).
        #[arg(long)]
        subtree: Option<String>,
    },
    /// Add a node with a text (under ROOT, or `--parent`).
    Add {
        /// The text.
        text: String,
        /// Parent node (id or id prefix; default ROOT).
        #[arg(long)]
        parent: Option<String>,
        #[command(flatten)]
        pos: Pos,
    },
    /// Move a node under a new parent.
    Mv {
        /// The node.
        node: String,
        /// Its new parent (`root` for ROOT).
        parent: String,
        #[command(flatten)]
        pos: Pos,
    },
    /// Delete a node (and its subtree).
    Rm {
        /// The node.
        node: String,
    },
    /// Restore a deleted node.
    Restore {
        /// The node.
        node: String,
    },
    /// Set a field (no value: clear it).
    Set {
        /// The node.
        node: String,
        /// Field name.
        field: String,
        /// Value.
        value: Option<String>,
    },
    /// List a node's children (default ROOT) with their fields.
    Ls {
        /// The node.
        node: Option<String>,
        /// Show deleted nodes (TRASH).
        #[arg(long)]
        trash: bool,
    },
    /// Find the nodes whose field holds a value (compared after
    /// lowercasing, NFC and collapsing whitespace), with their parent and
    /// text; with `--parent`, that node's children holding it, the
    /// canonical one first.
    Find {
        /// The value.
        value: String,
        /// The field.
        #[arg(long, default_value = "text")]
        field: String,
        /// Only this node's children.
        #[arg(long)]
        parent: Option<String>,
        /// Ask the server instead of the replica (a subtree replica holds
        /// only its subtree's nodes).
        #[arg(long)]
        server: bool,
    },
    /// Import an outline file (OPML, Markdown or indented text, Logseq,
    /// em, Roam JSON) under a node, as new nodes; prints what was made and
    /// every part of the file that could not be taken.
    Import {
        /// The file.
        file: PathBuf,
        /// Its format: opml, markdown (also text, logseq, em) or roam
        /// (default: from the file's extension).
        #[arg(long)]
        format: Option<String>,
        /// Where the outline goes (default ROOT).
        #[arg(long)]
        parent: Option<String>,
        /// The field the texts go in.
        #[arg(long, default_value = "text")]
        field: String,
    },
    /// Print a node and its subtree as an outline (Markdown or OPML).
    Outline {
        /// The node.
        node: String,
        /// markdown or opml.
        #[arg(long, default_value = "markdown")]
        format: String,
        /// The field the texts are in.
        #[arg(long, default_value = "text")]
        field: String,
    },
    /// Full-text search: the nodes whose fields hold every word of the
    /// query (the last as a prefix), best first.
    Search {
        /// The words.
        query: String,
        /// Only this field.
        #[arg(long)]
        field: Option<String>,
        /// Only this node's subtree.
        #[arg(long)]
        root: Option<String>,
        /// Most hits.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Ask the server instead of the replica.
        #[arg(long)]
        server: bool,
    },
    /// Print a subtree (default ROOT), indented, in order. Past
    /// `--max-indent` levels the depth is printed as a number instead of
    /// spaces, so a deep chain prints in bounded width.
    Tree {
        /// The node.
        node: Option<String>,
        /// Levels shown as indentation before the depth is shown as a
        /// number (`[depth]`).
        #[arg(long, default_value_t = 32)]
        max_indent: usize,
        /// Show the subtree as it was at this seq (the server says what it
        /// was: `GET .../subtree/{id}/at`).
        #[arg(long)]
        at: Option<u64>,
    },
    /// Sync with the server: once (until caught up and pushed), or keep
    /// syncing with `--watch`.
    Sync {
        /// Keep syncing until Ctrl-C.
        #[arg(long)]
        watch: bool,
    },
    /// Show the replica's sync state.
    Status,
    /// List the local ops the server refused for good (they left the
    /// outbox and will not be pushed again), with why.
    Rejected {
        /// Empty the list after printing it.
        #[arg(long)]
        clear: bool,
    },
    /// Show a node's history from the server: its moves, restores and
    /// field writes, newest first, with seq, stamp, author, and whether
    /// each move took effect.
    History {
        /// The node.
        node: String,
        /// Entries at most.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Read this replica's own record instead of asking the server
        /// (offline; it holds the seqs from its first snapshot's log on).
        #[arg(long)]
        local: bool,
    },
    /// Bring a subtree back to how it was at a seq (the server says what
    /// it was): new ops, sent by the next `sync`.
    Revert {
        /// The subtree's root.
        node: String,
        /// The seq (see `history`).
        #[arg(long)]
        to: u64,
    },
    /// Write a copy of the replica file.
    Export {
        /// Destination file.
        file: PathBuf,
    },
    /// Create a new thoughtspace on the server from this replica (needs an
    /// admin token for the new space).
    Fork {
        /// The new thoughtspace's name.
        space: String,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::WARN)
        .init();
    let cli = Cli::parse();
    let mut replica =
        Replica::open(&cli.db).with_context(|| format!("opening {}", cli.db.display()))?;
    match cli.command {
        Command::Init {
            server,
            space,
            subtree,
        } => {
            replica.bind_space(&space)?;
            replica.set_setting("server", server.trim_end_matches('/'))?;
            if let Some(t) = &cli.token {
                replica.set_setting("token", t)?;
            }
            // A token limited to a subtree can only follow that subtree.
            let claimed = cli
                .token
                .as_deref()
                .and_then(arbor_shared::auth::unverified_root);
            let root = match (subtree, claimed) {
                (Some(s), _) => Some(
                    s.parse::<NodeId>()
                        .context("--subtree takes a full node id")?,
                ),
                (None, claimed) => claimed,
            };
            if let Some(root) = root {
                replica.bind_subtree(root)?;
            }
            println!(
                "replica {} bound to {space} at {server}",
                replica.replica_id()
            );
        }
        Command::Add { text, parent, pos } => {
            let parent = match parent {
                Some(p) => resolve(&replica, &p)?,
                None => NodeId::ROOT,
            };
            let pos = position(&replica, &pos)?;
            let id = replica.create_with(parent, pos, &[("text", &text)])?;
            println!("{id}");
        }
        Command::Mv { node, parent, pos } => {
            let node = resolve(&replica, &node)?;
            let parent = resolve(&replica, &parent)?;
            let pos = position(&replica, &pos)?;
            replica.move_node(node, parent, pos)?;
        }
        Command::Rm { node } => {
            let node = resolve(&replica, &node)?;
            replica.delete(node)?;
        }
        Command::Restore { node } => {
            let node = resolve(&replica, &node)?;
            replica.restore(node)?;
        }
        Command::Set { node, field, value } => {
            let node = resolve(&replica, &node)?;
            replica.set(node, &field, value.as_deref())?;
        }
        Command::Ls { node, trash } => {
            let node = match (node, trash) {
                (_, true) => NodeId::TRASH,
                (Some(n), false) => resolve(&replica, &n)?,
                (None, false) => NodeId::ROOT,
            };
            let mut after = None;
            loop {
                let page = replica.children(node, after, 500)?;
                for child in &page {
                    println!("{}  {}", short(child.id), describe(&child.fields));
                }
                match page.last() {
                    Some(last) if page.len() == 500 => after = Some(last.id),
                    _ => break,
                }
            }
        }
        Command::Find {
            value,
            field,
            parent,
            server,
        } => {
            let parent = match parent {
                Some(p) => Some(resolve(&replica, &p)?),
                None => None,
            };
            let q = [("field", field.as_str()), ("value", value.as_str())];
            let lines: Vec<(NodeId, Option<NodeId>, BTreeMap<String, String>)> =
                match (parent, server) {
                    (Some(p), false) => replica
                        .children_by_value(p, &field, &value)?
                        .into_iter()
                        .map(|id| Ok((id, Some(p), replica.fields(id)?)))
                        .collect::<Result<_, arbor_client::ReplicaError>>()?,
                    (None, false) => {
                        let mut out = Vec::new();
                        let mut after = None;
                        loop {
                            let page = replica.holders(&field, &value, after, 500)?;
                            for h in &page {
                                out.push((h.node, Some(h.parent), replica.fields(h.node)?));
                            }
                            match page.last() {
                                Some(last) if page.len() == 500 => after = Some(last.node),
                                _ => break,
                            }
                        }
                        out
                    }
                    (Some(p), true) => {
                        let config = sync_config(&replica, cli.token.as_deref())?;
                        let page: arbor_shared::http::ChildrenBody =
                            get_json_query(&config, &format!("/nodes/{p}/children/by-value"), &q)?;
                        page.children
                            .into_iter()
                            .map(|c| (c.id, Some(p), registers(c.payloads)))
                            .collect()
                    }
                    (None, true) => {
                        let config = sync_config(&replica, cli.token.as_deref())?;
                        let mut out = Vec::new();
                        let mut after: Option<String> = None;
                        loop {
                            let mut query = q.to_vec();
                            if let Some(a) = &after {
                                query.push(("after", a));
                            }
                            let page: arbor_shared::http::HoldersBody =
                                get_json_query(&config, "/values", &query)?;
                            for h in page.holders {
                                out.push((h.node.id, Some(h.parent), registers(h.node.payloads)));
                            }
                            match page.next {
                                Some(n) => after = Some(n.to_string()),
                                None => break,
                            }
                        }
                        out
                    }
                };
            for (id, parent, fields) in lines {
                let parent = parent.map_or_else(String::new, short);
                println!("{}  in {parent}  {}", short(id), describe(&fields));
            }
        }
        Command::Import {
            file,
            format,
            parent,
            field,
        } => {
            use arbor_client::outline::{Format, parse};
            let format: Format = match format {
                Some(f) => f.parse().map_err(anyhow::Error::msg)?,
                None => match file.extension().and_then(|e| e.to_str()) {
                    Some("opml") | Some("xml") => Format::Opml,
                    Some("json") => Format::Roam,
                    _ => Format::Markdown,
                },
            };
            let parent = match parent {
                Some(p) => resolve(&replica, &p)?,
                None => NodeId::ROOT,
            };
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let parsed = parse(format, &text);
            let made = replica.import_outline(parent, &parsed.items, &field)?;
            println!("imported {} nodes under {}", made.len(), short(parent));
            for s in &parsed.skipped {
                println!("not imported: {}: {}", s.at, s.reason);
            }
            for (name, n) in &parsed.ignored {
                println!("ignored: {name} ({n} times)");
            }
        }
        Command::Outline {
            node,
            format,
            field,
        } => {
            let root = resolve(&replica, &node)?;
            let items = replica.outline_items(root, &field)?;
            let (text, skipped) = match format.as_str() {
                "markdown" | "md" => arbor_client::outline::write_markdown(&items),
                "opml" => arbor_client::outline::write_opml(&items, &items[0].text),
                other => bail!("unknown outline format {other:?} (markdown, opml)"),
            };
            print!("{text}");
            for s in &skipped {
                eprintln!("not exported: {}: {}", s.at, s.reason);
            }
        }
        Command::Search {
            query,
            field,
            root,
            limit,
            server,
        } => {
            let root = match root {
                Some(r) => Some(resolve(&replica, &r)?),
                None => None,
            };
            let hits: Vec<(NodeId, NodeId, String, String)> = if server {
                let config = sync_config(&replica, cli.token.as_deref())?;
                let limit = limit.to_string();
                let root = root.map(|r| r.to_string());
                let mut q = vec![("q", query.as_str()), ("limit", limit.as_str())];
                if let Some(f) = &field {
                    q.push(("field", f));
                }
                if let Some(r) = &root {
                    q.push(("root", r));
                }
                let body: arbor_shared::http::SearchBody = get_json_query(&config, "/search", &q)?;
                body.hits
                    .into_iter()
                    .map(|h| (h.id, h.parent, h.field, h.value))
                    .collect()
            } else {
                replica
                    .search(&query, field.as_deref(), root, limit as usize)?
                    .into_iter()
                    .map(|h| (h.node, h.parent, h.field, h.value))
                    .collect()
            };
            for (id, parent, field, value) in hits {
                println!("{}  in {}  [{field}] {value}", short(id), short(parent));
            }
        }
        Command::Tree {
            node,
            max_indent,
            at: Some(seq),
        } => {
            let root = match node {
                Some(n) => resolve(&replica, &n)?,
                None => NodeId::ROOT,
            };
            let config = sync_config(&replica, cli.token.as_deref())?;
            let past: arbor_shared::http::SubtreeAtBody =
                get_json(&config, &format!("/subtree/{root}/at?seq={seq}"))?;
            if !past.present {
                anyhow::bail!("{} was not in the tree at seq {seq}", short(root));
            }
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for line in tree_at_lines(&past, max_indent) {
                use std::io::Write as _;
                writeln!(out, "{line}")?;
            }
        }
        Command::Tree {
            node,
            max_indent,
            at: None,
        } => {
            let root = match node {
                Some(n) => resolve(&replica, &n)?,
                None => NodeId::ROOT,
            };
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let mut failed = None;
            replica.walk(root, |id, depth| {
                use std::io::Write as _;
                let fields = match replica.fields(id) {
                    Ok(f) => f,
                    Err(e) => {
                        failed = Some(e);
                        return false;
                    }
                };
                writeln!(
                    out,
                    "{}{}  {}",
                    indent(depth, max_indent),
                    short(id),
                    describe(&fields)
                )
                .is_ok()
            })?;
            if let Some(e) = failed {
                return Err(e.into());
            }
        }
        Command::Sync { watch } => {
            let config = sync_config(&replica, cli.token.as_deref())?;
            run_sync(Arc::new(Mutex::new(replica)), config, watch)?;
        }
        Command::Status => {
            let space = replica.space()?.unwrap_or_else(|| "(not bound)".into());
            let server = replica
                .setting("server")?
                .unwrap_or_else(|| "(none)".into());
            println!("replica   {}", replica.replica_id());
            println!("space     {space}");
            println!("server    {server}");
            if let Some(root) = replica.subtree_root()? {
                println!("subtree   {root}");
            }
            match replica.cursor()? {
                Some(c) => println!("cursor    {c}"),
                None => println!("cursor    (none: the next sync loads a snapshot)"),
            }
            println!("nodes     {}", replica.node_count()?);
            println!("outbox    {} ops not yet committed", replica.outbox_len()?);
            let rejected = replica.rejected_len()?;
            if rejected > 0 {
                println!("rejected  {rejected} ops refused by the server (arbor rejected)");
            }
            if let Some(h) = replica.horizon()? {
                println!("horizon   {h}");
            }
        }
        Command::Rejected { clear } => {
            for r in replica.rejected()? {
                let what = match &r.op {
                    arbor_shared::Op::Move(m) => {
                        format!("move {} under {}", short(m.node), short(m.parent))
                    }
                    arbor_shared::Op::Set(s) => format!("set {}.{}", short(s.node), s.field),
                };
                println!("{}  {what}  {}: {}", r.op.stamp(), r.code, r.message);
            }
            if clear {
                let n = replica.clear_rejected()?;
                println!("cleared {n} rejected ops");
            }
        }
        Command::History { node, limit, local } => {
            let node = resolve(&replica, &node)?;
            let limit = limit.clamp(1, 1_000);
            let body = if local {
                replica.history(node, None, limit as usize)?
            } else {
                let config = sync_config(&replica, cli.token.as_deref())?;
                get_json(&config, &format!("/nodes/{node}/history?limit={limit}"))?
            };
            for line in history_lines(&body) {
                println!("{line}");
            }
        }
        Command::Revert { node, to } => {
            let node = resolve(&replica, &node)?;
            let config = sync_config(&replica, cli.token.as_deref())?;
            let past: arbor_shared::http::SubtreeAtBody =
                get_json(&config, &format!("/subtree/{node}/at?seq={to}"))?;
            let report = replica.revert_subtree(&past)?;
            println!(
                "moved {} nodes, wrote {} fields back to seq {to}{}; `arbor sync` sends them",
                report.moved,
                report.set,
                if report.skipped.is_empty() {
                    String::new()
                } else {
                    format!(" ({} left where they are: a cycle)", report.skipped.len())
                }
            );
        }
        Command::Export { file } => {
            replica.export(&file)?;
            println!("wrote {}", file.display());
        }
        Command::Fork { space } => {
            let config = sync_config(&replica, cli.token.as_deref())?;
            fork(replica, &config.server, &space, &config.token)?;
            println!("created thoughtspace {space} from this replica");
        }
    }
    Ok(())
}

/// The first 8 hex digits of an id (enough to name it in a CLI session).
fn short(id: NodeId) -> String {
    id.to_string()[..8].to_string()
}

/// The indentation of a line at `depth` (1 for the root's children): two
/// spaces a level up to `max` levels; deeper, `max` levels and the depth as
/// a number, so a line is never wider than about `2 * max` plus the node.
fn indent(depth: usize, max: usize) -> String {
    let levels = depth.saturating_sub(1);
    if levels <= max {
        "  ".repeat(levels)
    } else {
        format!("{}[{depth}] ", "  ".repeat(max))
    }
}

fn describe(fields: &std::collections::BTreeMap<String, String>) -> String {
    let mut parts = Vec::new();
    if let Some(t) = fields.get("text") {
        parts.push(t.clone());
    }
    for (k, v) in fields.iter().filter(|(k, _)| *k != "text") {
        parts.push(format!("[{k}={v}]"));
    }
    parts.join(" ")
}

/// A node from a full id, an id prefix, `root` or `trash`.
fn resolve(replica: &Replica, text: &str) -> anyhow::Result<NodeId> {
    match text.to_ascii_lowercase().as_str() {
        "root" => return Ok(NodeId::ROOT),
        "trash" => return Ok(NodeId::TRASH),
        _ => {}
    }
    if let Ok(id) = text.parse::<NodeId>() {
        return Ok(id);
    }
    let hex: String = text
        .chars()
        .filter(|c| *c != '-')
        .collect::<String>()
        .to_ascii_uppercase();
    if hex.is_empty() || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!("{text} is not a node id or id prefix");
    }
    let mut stmt = replica
        .connection()
        .prepare("SELECT id FROM nodes WHERE hex(id) LIKE ?1 || '%' LIMIT 2")?;
    let ids: Vec<Vec<u8>> = stmt
        .query_map([&hex], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    match ids.as_slice() {
        [one] => {
            let bytes: [u8; 16] = one
                .as_slice()
                .try_into()
                .context("a stored id is not 16 bytes")?;
            Ok(NodeId::from_bytes(bytes))
        }
        [] => bail!("no node starts with {text}"),
        _ => bail!("{text} matches several nodes: give more digits"),
    }
}

fn position(replica: &Replica, pos: &Pos) -> anyhow::Result<Position> {
    Ok(match (&pos.before, &pos.after, pos.first) {
        (Some(b), _, _) => Position::Before(resolve(replica, b)?),
        (_, Some(a), _) => Position::After(resolve(replica, a)?),
        (_, _, true) => Position::First,
        _ => Position::Last,
    })
}

fn sync_config(replica: &Replica, token: Option<&str>) -> anyhow::Result<SyncConfig> {
    let space = replica
        .space()?
        .context("the replica is not bound: run `arbor init` first")?;
    let server = replica
        .setting("server")?
        .context("no server: run `arbor init --server ...`")?;
    let token = match token {
        Some(t) => t.to_string(),
        None => replica
            .setting("token")?
            .context("no token: pass --token or set ARBOR_TOKEN")?,
    };
    Ok(SyncConfig::new(&server, &space, &token))
}

fn run_sync(
    replica: arbor_client::SharedReplica,
    config: SyncConfig,
    watch: bool,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let (tx, mut rx) = tokio::sync::watch::channel(SyncStatus::default());
        // Progress bar while a snapshot loads; state changes on stderr.
        let printer = tokio::spawn(async move {
            let mut bar: Option<indicatif::ProgressBar> = None;
            let mut image_bar: Option<indicatif::ProgressBar> = None;
            let mut last = None;
            while rx.changed().await.is_ok() {
                let status = rx.borrow_and_update().clone();
                match status.state {
                    SyncState::ColdStart(p) if p.total_bytes > 0 => {
                        let b = image_bar.get_or_insert_with(|| {
                            let b = indicatif::ProgressBar::new(p.total_bytes);
                            b.set_style(
                                indicatif::ProgressStyle::with_template(
                                    "downloading replica image {bar:40} {bytes}/{total_bytes}",
                                )
                                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                            );
                            b
                        });
                        b.set_position(p.bytes);
                    }
                    SyncState::ColdStart(p) => {
                        if let Some(b) = image_bar.take() {
                            b.finish_and_clear();
                        }
                        let b = bar.get_or_insert_with(|| {
                            let b = indicatif::ProgressBar::new(p.total_rows.max(1));
                            b.set_style(
                                indicatif::ProgressStyle::with_template(
                                    "loading snapshot {bar:40} {pos}/{len} rows, {msg}",
                                )
                                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                            );
                            b
                        });
                        b.set_length(p.total_rows.max(1));
                        b.set_position(p.rows);
                        b.set_message(format!("{:.1} MB", p.bytes as f64 / 1e6));
                    }
                    ref s => {
                        if let Some(b) = bar.take() {
                            b.finish();
                        }
                        if let Some(b) = image_bar.take() {
                            b.finish();
                        }
                        let line = format!("{s:?}");
                        if last.as_ref() != Some(&line) {
                            eprintln!(
                                "sync: {line} (cursor {:?}, outbox {})",
                                status.cursor, status.outbox
                            );
                            last = Some(line);
                        }
                    }
                }
            }
        });
        let result = if watch {
            arbor_client::sync_forever(replica, config, tx, async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .map(|()| None)
        } else {
            arbor_client::sync_once(replica, config, tx, 5)
                .await
                .map(Some)
        };
        let _ = printer.await;
        match result {
            Ok(Some(report)) => {
                println!(
                    "synced: {} ops applied, {} local ops committed, {} snapshot loads",
                    report.applied, report.pushed, report.cold_starts
                );
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e) => Err(anyhow::Error::new(e)),
        }
    })
}

/// `GET {server}/v1/spaces/{space}{path}` as JSON.
fn get_json<T: serde::de::DeserializeOwned>(config: &SyncConfig, path: &str) -> anyhow::Result<T> {
    get_json_query(config, path, &[])
}

/// The set values of registers on the wire.
fn registers(
    payloads: BTreeMap<String, arbor_shared::http::RegisterJson>,
) -> BTreeMap<String, String> {
    payloads
        .into_iter()
        .filter_map(|(f, r)| r.value.map(|v| (f, v)))
        .collect()
}

/// [`get_json`] with query parameters (encoded here).
fn get_json_query<T: serde::de::DeserializeOwned>(
    config: &SyncConfig,
    path: &str,
    query: &[(&str, &str)],
) -> anyhow::Result<T> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let url = format!("{}/v1/spaces/{}{path}", config.server, config.space);
    runtime.block_on(async {
        let r = reqwest::Client::new()
            .get(&url)
            .query(query)
            .bearer_auth(&config.token)
            .send()
            .await?;
        if !r.status().is_success() {
            let status = r.status();
            let text = r.text().await.unwrap_or_default();
            anyhow::bail!("the server answered {status}: {text}");
        }
        Ok(r.json().await?)
    })
}

/// A subtree as it was at a seq, printed as `tree` prints the replica's:
/// pre-order, children in key order, root excluded.
fn tree_at_lines(past: &arbor_shared::http::SubtreeAtBody, max_indent: usize) -> Vec<String> {
    use std::collections::{BTreeMap, HashMap};
    let mut children: HashMap<NodeId, Vec<(&arbor_shared::OrderKey, NodeId)>> = HashMap::new();
    for n in &past.nodes {
        children.entry(n.parent).or_default().push((&n.key, n.id));
    }
    for list in children.values_mut() {
        list.sort();
    }
    let mut fields: HashMap<NodeId, BTreeMap<String, String>> = HashMap::new();
    for r in &past.registers {
        if let Some(v) = &r.value {
            fields
                .entry(r.node)
                .or_default()
                .insert(r.field.clone(), v.clone());
        }
    }
    let none = BTreeMap::new();
    let mut lines = Vec::new();
    // An explicit stack: chains deeper than 100 must not recurse.
    let mut stack: Vec<(NodeId, usize)> = children
        .get(&past.root)
        .map(|l| l.iter().rev().map(|(_, id)| (*id, 1)).collect())
        .unwrap_or_default();
    while let Some((id, depth)) = stack.pop() {
        lines.push(format!(
            "{}{}  {}",
            indent(depth, max_indent),
            short(id),
            describe(fields.get(&id).unwrap_or(&none))
        ));
        if let Some(l) = children.get(&id) {
            stack.extend(l.iter().rev().map(|(_, c)| (*c, depth + 1)));
        }
    }
    lines
}

/// A node's history, one line per entry, newest first.
fn history_lines(body: &arbor_shared::http::NodeHistoryBody) -> Vec<String> {
    body.entries
        .iter()
        .map(|e| {
            let who = e.author.as_deref().unwrap_or(match e.origin {
                arbor_shared::http::Origin::Restore => "(restore rule)",
                _ => "(unknown)",
            });
            let what = match &e.op {
                arbor_shared::Op::Move(m) if m.parent == NodeId::TRASH => "deleted".to_string(),
                arbor_shared::Op::Move(m) => format!("moved under {}", short(m.parent)),
                arbor_shared::Op::Set(s) => match &s.value {
                    Some(v) => format!("set {} = {v:?}", s.field),
                    None => format!("cleared {}", s.field),
                },
            };
            let skipped = if e.applied == Some(false) {
                "  (skipped: a cycle)"
            } else {
                ""
            };
            format!("{:>8}  {}  {who}  {what}{skipped}", e.seq, e.op.stamp())
        })
        .collect()
}

fn fork(replica: Replica, server: &str, space: &str, token: &str) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(arbor_client::fork(
        Arc::new(Mutex::new(replica)),
        server,
        space,
        token,
    ))?;
    Ok(())
}
