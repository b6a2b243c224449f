//! The code table of docs/PROTOCOL.md against `ErrorCode`, both ways: every code with its HTTP status, close code, disposition and scope.

use std::collections::BTreeMap;

use arbor_shared::ErrorCode;
use arbor_shared::error::Scope;

/// The rows of the table: code -> (status, close, disposition, scope).
fn documented() -> BTreeMap<String, (u16, Option<u16>, String, String)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/PROTOCOL.md");
    let text = std::fs::read_to_string(path).unwrap();
    let mut rows = BTreeMap::new();
    for line in text.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // | `code` | status | close | disposition | scope | meaning |
        if cells.len() < 7 || !cells[1].starts_with('`') {
            continue;
        }
        let (Ok(status), scope) = (cells[2].parse::<u16>(), cells[5]) else {
            continue;
        };
        if scope != "wire" && scope != "local" {
            continue;
        }
        let code = cells[1].trim_matches('`').to_string();
        let close = (cells[3] != "-").then(|| cells[3].parse::<u16>().unwrap());
        let previous = rows.insert(
            code.clone(),
            (status, close, cells[4].to_string(), scope.to_string()),
        );
        assert!(previous.is_none(), "{code} is in the table twice");
    }
    rows
}

#[test]
fn the_protocol_documents_every_code_exactly() {
    let doc = documented();
    for code in ErrorCode::ALL {
        let Some((status, close, disposition, scope)) = doc.get(code.as_str()) else {
            panic!("docs/PROTOCOL.md does not list {code}");
        };
        assert_eq!(*status, code.http_status(), "{code}: HTTP status");
        assert_eq!(*close, code.close_code(), "{code}: close code");
        assert_eq!(
            disposition,
            code.disposition().as_str(),
            "{code}: disposition"
        );
        let want = match code.scope() {
            Scope::Wire => "wire",
            Scope::Local => "local",
        };
        assert_eq!(scope, want, "{code}: scope");
    }
    for name in doc.keys() {
        assert_eq!(
            ErrorCode::parse(name).as_str(),
            name,
            "docs/PROTOCOL.md lists {name}, which is not a code"
        );
    }
    assert_eq!(doc.len(), ErrorCode::ALL.len());
}

#[test]
fn codes_round_trip_through_their_names_and_json() {
    for &code in ErrorCode::ALL {
        assert_eq!(ErrorCode::parse(code.as_str()), code);
        let json = serde_json::to_string(&code).unwrap();
        assert_eq!(json, format!("\"{code}\""));
        assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), code);
    }
    // A code from a newer peer is not an error: it is `unknown`, retried.
    let newer: ErrorCode = serde_json::from_str("\"rate_limited_v9\"").unwrap();
    assert_eq!(newer, ErrorCode::Unknown);
    assert_eq!(newer.disposition(), arbor_shared::Disposition::Retry);
}

#[test]
fn a_close_code_names_the_first_code_that_closes_with_it() {
    for &code in ErrorCode::ALL {
        if let Some(close) = code.close_code() {
            let first = ErrorCode::from_close(close).unwrap();
            assert_eq!(first.close_code(), Some(close));
            let first_pos = ErrorCode::ALL.iter().position(|c| *c == first).unwrap();
            let pos = ErrorCode::ALL.iter().position(|c| *c == code).unwrap();
            assert!(first_pos <= pos);
        }
    }
    assert_eq!(ErrorCode::from_close(1000), None);
    assert_eq!(ErrorCode::from_close(4001), Some(ErrorCode::TokenExpired));
}
