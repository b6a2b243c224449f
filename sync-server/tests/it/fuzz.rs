//! The apply path under fuzzed input, end to end over HTTP: ingest bodies
//! built from valid batches (random ops over a small id space, including
//! reserved nodes, bad keys, unknown parents, long values, stamps below
//! the horizon) and then byte-mutated. Every answer is 200 or a typed 4xx
//! JSON error, never a 5xx or a dropped connection, and a refused batch
//! writes nothing. `ARBOR_FUZZ_ITERS` raises the budget; the seed is
//! printed.

use arbor_shared::auth::Role;
use arbor_shared::sim::splitmix;
use arbor_shared::{NodeId, Stamp};
use serde_json::json;

use crate::harness::*;
use crate::http::{Server, token};

fn random_op(state: &mut u64, t0: u64) -> serde_json::Value {
    let node = match splitmix(state) % 20 {
        0 => NodeId::ROOT,
        1 => NodeId::TRASH,
        n => NodeId(u128::from(n % 8 + 1)),
    };
    // Mostly fresh stamps; sometimes one below the ops already stored.
    let stamp = if splitmix(state) % 10 == 0 {
        Stamp::new(t0 - 100 + splitmix(state) % 10, 9)
    } else {
        Stamp::new(t0 + splitmix(state) % 100_000, 1 + splitmix(state) % 3)
    };
    if splitmix(state) % 2 == 0 {
        let parent = NodeId(u128::from(splitmix(state) % 10));
        // Mostly existing nodes (1..=8) and ROOT; sometimes unknown (9).
        let key = match splitmix(state) % 10 {
            0 => "".to_string(),
            1 => "8000".to_string(),
            2 => "zz".to_string(),
            _ => format!("80{:02x}", 1 + splitmix(state) % 250),
        };
        json!({"kind": "move", "stamp": stamp.to_string(), "known_seq": splitmix(state) % 50,
               "node": node.to_string(), "parent": parent.to_string(), "key": key})
    } else {
        let value = match splitmix(state) % 10 {
            0 => serde_json::Value::Null,
            1 => json!("v".repeat(70_000)),
            _ => json!(format!("value {}", splitmix(state) % 100)),
        };
        let field = match splitmix(state) % 10 {
            0 => String::new(),
            1 => "f".repeat(70),
            _ => "text".to_string(),
        };
        json!({"kind": "set", "stamp": stamp.to_string(), "known_seq": 0,
               "node": node.to_string(), "field": field, "value": value})
    }
}

fn mutate(state: &mut u64, mut b: Vec<u8>) -> Vec<u8> {
    for _ in 0..(splitmix(state) % 3) {
        if b.is_empty() {
            break;
        }
        let i = (splitmix(state) as usize) % b.len();
        match splitmix(state) % 3 {
            0 => b[i] ^= 1 << (splitmix(state) % 8),
            1 => b.insert(i, splitmix(state) as u8),
            _ => {
                b.remove(i);
            }
        }
    }
    b
}

#[tokio::test]
async fn fuzzed_ingest_is_refused_typed_and_writes_nothing() {
    let mut state = seed("fuzzed_ingest_is_refused_typed_and_writes_nothing");
    let iters: usize = std::env::var("ARBOR_FUZZ_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let s = Server::start().await;
    let admin = token("f", Role::Admin, None, 600);
    s.create_space("f", &admin).await;
    let t0 = now_ms() << 16;
    // Nodes 1..=8 exist, so many fuzzed batches are valid.
    let creates: Vec<_> = (1..=8u64)
        .map(|i| {
            mv(
                t0 + i,
                9,
                n(u128::from(i)),
                NodeId::ROOT,
                &[0x80, i as u8],
                0,
            )
        })
        .collect();
    let r = s.push("f", &admin, &creates).await;
    assert_eq!(r.status(), 200);
    let t0 = t0 + 100;
    let (mut accepted, mut refused) = (0, 0);
    for _ in 0..iters {
        let n = 1 + splitmix(&mut state) % 5;
        let ops: Vec<serde_json::Value> = (0..n).map(|_| random_op(&mut state, t0)).collect();
        let body = mutate(
            &mut state,
            serde_json::to_vec(&json!({ "ops": ops })).unwrap(),
        );
        let before: arbor_sync_server::api::OpsBody =
            s.get_json("/v1/spaces/f/ops?after=0&limit=1", &admin).await;
        let r = s
            .http
            .post(s.url("/v1/spaces/f/ops"))
            .bearer_auth(&admin)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("the server answers every body");
        let status = r.status().as_u16();
        let answer: serde_json::Value = r.json().await.expect("a JSON answer");
        if status == 200 {
            accepted += 1;
            continue;
        }
        refused += 1;
        assert!((400..500).contains(&status), "status {status}: {answer}");
        assert!(
            answer["error"]["code"].is_string(),
            "untyped error: {answer}"
        );
        let after: arbor_sync_server::api::OpsBody =
            s.get_json("/v1/spaces/f/ops?after=0&limit=1", &admin).await;
        assert_eq!(after.head_seq, before.head_seq, "a refused batch wrote");
    }
    eprintln!("fuzzed ingest: {accepted} accepted, {refused} refused");
    assert!(refused > 0 && accepted > 0);
    s.stop().await;
}
