//! Cold start from a replica image: a fresh replica takes the server's image and catches up from its seq, a subtree replica takes its subtree's, and a corrupt, cut, wrong-space, wrong-subtree or wrong-schema image is refused before it replaces anything (the sync loads rows instead).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arbor_client::image::{ImageDecoder, ImageInfo};
use arbor_client::{Position, Replica, ReplicaError, SharedReplica, SyncReport, SyncStatus};
use arbor_shared::NodeId;
use arbor_sync_server::image::{ImageConfig, ImageMeta, Images};
use tokio::sync::watch;

use crate::harness::*;

/// A server keeping images in `dir`, and an image builder over the same
/// database and folder (the test builds when it wants to, instead of
/// waiting for the server's background build).
async fn server_with_images(dir: &Path) -> (TestServer, Arc<Images>) {
    let config = ImageConfig {
        dir: dir.to_path_buf(),
        rebuild_ops: 10_000,
        level: 3,
    };
    let images_config = config.clone();
    let server = TestServer::start_with("s", move |c| c.images = Some(images_config)).await;
    let readers =
        arbor_sync_server::db::Readers::new(server.db.clone(), Vec::new(), Duration::from_secs(5));
    let images = Arc::new(Images::new(config, Arc::new(readers)).unwrap());
    (server, images)
}

async fn sync_report(server: &TestServer, r: &SharedReplica) -> SyncReport {
    let (tx, _rx) = watch::channel(SyncStatus::default());
    arbor_client::sync_once(r.clone(), server.sync_config("s"), tx, 3)
        .await
        .unwrap()
}

/// A writer's tree: `n` nodes under a few parents, each with a title.
fn grow(r: &SharedReplica, n: usize) -> Vec<NodeId> {
    let mut r = r.lock().unwrap();
    let mut ids = Vec::new();
    for i in 0..n {
        let parent = if i < 5 { NodeId::ROOT } else { ids[i % 5] };
        let title = format!("node {i}");
        ids.push(
            r.create_with(parent, Position::Last, &[("title", title.as_str())])
                .unwrap(),
        );
    }
    ids
}

/// `GET /v1/spaces/s{path}` with a read token: status and headers.
async fn head_of(server: &TestServer, path: &str) -> (u16, reqwest::header::HeaderMap) {
    let response = reqwest::Client::new()
        .get(format!("{}/v1/spaces/s{path}", server.url()))
        .bearer_auth(token("s", arbor_shared::auth::Role::Read))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.headers().clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_start_takes_the_image_and_catches_up_from_its_seq() {
    let cache = TempDir::new("image-cache");
    let (server, images) = server_with_images(&cache.0).await;
    let dir = TempDir::new("image");
    let a = dir.replica("a");
    let ids = grow(&a, 300);
    sync(&server, &a).await;

    // None yet: the server says so at once (and builds behind it).
    let v = arbor_client::schema::VERSION;
    let (status, _) = head_of(&server, &format!("/image?schema={v}")).await;
    assert_eq!(status, 404);
    let built = images.build("s", None).await.unwrap();
    let (status, headers) = head_of(&server, &format!("/image?schema={v}")).await;
    assert_eq!(status, 200);
    assert_eq!(headers["arbor-image-seq"], built.seq.to_string().as_str());
    // (The server's own build, started by the 404, may have finished
    // after this one: same seq, its own bytes.)
    assert_eq!(headers["arbor-image-crc32"].len(), 8);
    // Another schema version never gets it.
    let (status, _) = head_of(&server, &format!("/image?schema={}", v + 1)).await;
    assert_eq!(status, 404);

    // Edits after the image's seq: catch-up brings them.
    {
        let mut r = a.lock().unwrap();
        r.set(ids[7], "title", Some("after the image")).unwrap();
        r.move_node(ids[8], ids[0], Position::First).unwrap();
    }
    sync(&server, &a).await;

    let b = dir.replica("b");
    let b_id = b.lock().unwrap().replica_id();
    // What a crash mid-download leaves: a partial decoded file. The next
    // download overwrites it.
    std::fs::write(dir.0.join("b.db.image"), b"SQLite format 3\0 cut short").unwrap();
    let report = sync_report(&server, &b).await;
    assert_eq!((report.cold_starts, report.image_starts), (1, 1));
    let pg = server.db.state("s").await.unwrap();
    assert_eq!(b.lock().unwrap().state().unwrap(), pg);
    b.lock().unwrap().check_invariants().unwrap();
    assert_eq!(
        b.lock().unwrap().replica_id(),
        b_id,
        "the replica keeps its own id"
    );
    assert!(
        !dir.0.join("b.db.image").exists(),
        "the decoded file is gone"
    );
    // The file on disk is the replica: opened again, it is the same one.
    {
        let again = Replica::open(&dir.0.join("b.db")).unwrap();
        assert_eq!(again.replica_id(), b_id);
        assert_eq!(again.state().unwrap(), b.lock().unwrap().state().unwrap());
        assert_eq!(again.cursor().unwrap(), b.lock().unwrap().cursor().unwrap());
    }

    // B edits and pushes as any replica does; A sees it.
    let made = {
        let mut r = b.lock().unwrap();
        r.create_with(ids[1], Position::Last, &[("title", "from b")])
            .unwrap()
    };
    sync(&server, &b).await;
    sync(&server, &a).await;
    assert_eq!(
        a.lock().unwrap().field(made, "title").unwrap().as_deref(),
        Some("from b")
    );

    // A subtree replica takes its subtree's image.
    images.build("s", Some(ids[2])).await.unwrap();
    let c = dir.replica("c");
    c.lock().unwrap().bind_subtree(ids[2]).unwrap();
    let report = sync_report(&server, &c).await;
    assert_eq!(report.image_starts, 1);
    let c = c.lock().unwrap();
    let a = a.lock().unwrap();
    // The root and everything below it (`walk` leaves the root out).
    let mut want = vec![ids[2]];
    a.walk(ids[2], |n, _| {
        want.push(n);
        true
    })
    .unwrap();
    assert!(want.len() > 50);
    for n in &want {
        assert_eq!(c.field(*n, "title").unwrap(), a.field(*n, "title").unwrap());
    }
    assert_eq!(c.node_count().unwrap(), want.len() as u64);
}

async fn sync(server: &TestServer, r: &SharedReplica) {
    sync_report(server, r).await;
}

/// The cached image of the space as the server would send it: its info
/// and compressed bytes.
fn cached(cache: &Path, meta: &ImageMeta) -> (ImageInfo, Vec<u8>) {
    let info = ImageInfo {
        seq: meta.seq,
        schema: meta.schema,
        size: meta.size,
        crc32: u32::from_str_radix(&meta.crc32, 16).unwrap(),
    };
    (info, std::fs::read(cache.join(&meta.file)).unwrap())
}

/// Decodes `body` in uneven chunks into a file and installs it into `r`.
fn decode_and_install(
    r: &mut Replica,
    info: &ImageInfo,
    body: &[u8],
    file: &PathBuf,
) -> Result<u64, ReplicaError> {
    let _ = std::fs::remove_file(file);
    let mut out = Vec::new();
    let mut decoder = ImageDecoder::new(info).unwrap();
    let mut sink = |b: &[u8]| {
        out.extend_from_slice(b);
        Ok(())
    };
    for chunk in body.chunks(7_777) {
        decoder.push(chunk, &mut sink)?;
    }
    decoder.finish(&mut sink)?;
    std::fs::write(file, &out).unwrap();
    r.install_image(file, info)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_cut_or_foreign_image_is_refused_and_changes_nothing() {
    let cache = TempDir::new("image-bad-cache");
    let (server, images) = server_with_images(&cache.0).await;
    let dir = TempDir::new("image-bad");
    let a = dir.replica("a");
    let ids = grow(&a, 200);
    sync(&server, &a).await;
    let meta = images.build("s", None).await.unwrap();
    let (info, body) = cached(&cache.0, &meta);
    let file = dir.0.join("decoded.image");

    // The good one installs (the cases below differ from it by one thing).
    {
        let mut fresh = Replica::open(&dir.0.join("good.db")).unwrap();
        assert_eq!(
            decode_and_install(&mut fresh, &info, &body, &file).unwrap(),
            info.seq
        );
        assert_eq!(fresh.node_count().unwrap(), 200);
    }

    let mut flipped = body.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x5a;
    let mut wrong_sum = info.clone();
    wrong_sum.crc32 ^= 1;
    let mut wrong_schema = info.clone();
    wrong_schema.schema += 1;
    let mut wrong_seq = info.clone();
    wrong_seq.seq += 1;
    let mut longer = body.clone();
    longer.extend_from_slice(&body[..64]);
    let cases: Vec<(&str, ImageInfo, Vec<u8>)> = vec![
        ("a flipped byte", info.clone(), flipped),
        ("cut in half", info.clone(), body[..body.len() / 2].to_vec()),
        (
            "cut at the end",
            info.clone(),
            body[..body.len() - 3].to_vec(),
        ),
        ("bytes after it", info.clone(), longer),
        ("another checksum", wrong_sum, body.clone()),
        ("another schema", wrong_schema, body.clone()),
        ("another seq", wrong_seq, body.clone()),
        ("not zstd", info.clone(), vec![7u8; 4096]),
        ("empty", info.clone(), Vec::new()),
    ];
    for (name, info, body) in &cases {
        let path = dir.0.join(format!("{}.db", name.replace(' ', "-")));
        let mut r = Replica::open(&path).unwrap();
        let before = r.replica_id();
        let err = decode_and_install(&mut r, info, body, &file).expect_err(name);
        assert!(matches!(err, ReplicaError::Image(_)), "{name}: {err}");
        assert_eq!(r.cursor().unwrap(), None, "{name}");
        assert_eq!(r.node_count().unwrap(), 0, "{name}");
        assert_eq!(r.replica_id(), before, "{name}");
    }

    // A good image, but not for this replica: another space, a subtree
    // replica, a replica with edits of its own.
    let other_space = {
        let mut r = Replica::open(&dir.0.join("other.db")).unwrap();
        r.bind_space("other").unwrap();
        r
    };
    let subtree = {
        let mut r = Replica::open(&dir.0.join("subtree.db")).unwrap();
        r.bind_subtree(ids[0]).unwrap();
        r
    };
    let edited = {
        let mut r = Replica::open(&dir.0.join("edited.db")).unwrap();
        r.create(NodeId::ROOT, Position::Last).unwrap();
        r
    };
    for (name, mut r) in [
        ("other space", other_space),
        ("subtree", subtree),
        ("edited", edited),
    ] {
        let nodes = r.node_count().unwrap();
        let err = decode_and_install(&mut r, &info, &body, &file).expect_err(name);
        assert!(matches!(err, ReplicaError::Image(_)), "{name}: {err}");
        assert_eq!(r.cursor().unwrap(), None, "{name}");
        assert_eq!(r.node_count().unwrap(), nodes, "{name}");
    }

    // Served corrupt (a flipped byte in the cached file): the sync refuses
    // it and loads rows instead, and leaves no decoded file behind.
    let mut on_disk = std::fs::read(cache.0.join(&meta.file)).unwrap();
    let mid = on_disk.len() / 2;
    on_disk[mid] ^= 0x5a;
    std::fs::write(cache.0.join(&meta.file), &on_disk).unwrap();
    let b = dir.replica("b");
    let report = sync_report(&server, &b).await;
    assert_eq!((report.cold_starts, report.image_starts), (1, 0));
    let pg = server.db.state("s").await.unwrap();
    assert_eq!(b.lock().unwrap().state().unwrap(), pg);
    assert!(!dir.0.join("b.db.image").exists());
}
