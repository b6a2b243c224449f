//! Full-text search (`Replica::search`, docs/CLIENT.md) from the replica
//! or from the server (`GET .../search`), with hits as JSON in the shape
//! of `web/src/types.ts` (`SearchHit`).

use std::rc::Rc;

use arbor_shared::ErrorCode;
use arbor_shared::http::SearchBody;
use serde_json::json;
use wasm_bindgen::prelude::*;

use crate::history::{get_json, promise};
use crate::js::{JsResult, err};
use crate::{Inner, WebReplica, node_id, replica_err};

/// Hits as JSON `[{id, parent, field, value}]`.
fn hits_json(hits: impl Iterator<Item = (String, String, String, String)>) -> String {
    let hits: Vec<_> = hits
        .map(|(id, parent, field, value)| {
            json!({"id": id, "parent": parent, "field": field, "value": value})
        })
        .collect();
    serde_json::Value::Array(hits).to_string()
}

async fn server_search(
    inner: Rc<Inner>,
    query: String,
    field: Option<String>,
    root: Option<String>,
    limit: u32,
) -> JsResult<String> {
    let enc = |s: &str| String::from(js_sys::encode_uri_component(s));
    let mut path = format!(
        "/search?q={}&limit={}",
        enc(&query),
        limit.clamp(1, arbor_client::replica::MAX_SEARCH_HITS as u32)
    );
    if let Some(f) = field {
        path.push_str(&format!("&field={}", enc(&f)));
    }
    if let Some(r) = root {
        path.push_str(&format!("&root={}", node_id(&r)?));
    }
    let body: SearchBody = get_json(&inner, &path).await?;
    Ok(hits_json(body.hits.into_iter().map(|h| {
        (h.id.to_string(), h.parent.to_string(), h.field, h.value)
    })))
}

#[wasm_bindgen]
impl WebReplica {
    /// The registers whose value holds every word of `query` (the last as
    /// a prefix), best first, as JSON `[{id, parent, field, value}]`;
    /// `field` and `root` narrow it.
    pub fn search(
        &self,
        query: &str,
        field: Option<String>,
        root: Option<String>,
        limit: u32,
    ) -> Result<String, JsValue> {
        let root = root.as_deref().map(node_id).transpose()?;
        let hits = self
            .inner
            .replica_mut()?
            .search(query, field.as_deref(), root, limit as usize)
            .map_err(replica_err)?;
        Ok(hits_json(hits.into_iter().map(|h| {
            (h.node.to_string(), h.parent.to_string(), h.field, h.value)
        })))
    }

    /// [`Self::search`] answered by the server (a subtree replica holds
    /// only its subtree): a promise of the same JSON. Needs `connect`.
    #[wasm_bindgen(js_name = serverSearch)]
    pub fn server_search(
        &self,
        query: String,
        field: Option<String>,
        root: Option<String>,
        limit: u32,
    ) -> js_sys::Promise {
        if query.len() > 1_024 {
            return js_sys::Promise::reject(&err(
                ErrorCode::BadRequest,
                "query longer than 1,024 bytes",
            ));
        }
        promise(server_search(self.inner.clone(), query, field, root, limit))
    }
}
