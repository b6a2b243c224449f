//! Lookups by value through the value index (`Replica::holders`,
//! `Replica::children_by_value`, docs/CLIENT.md): a value's holders from
//! the replica or from the server, a parent's children by value, and
//! merging duplicate children, with their answers as JSON in the shapes of
//! `web/src/types.ts`.

use std::rc::Rc;

use arbor_shared::ErrorCode;
use arbor_shared::http::HoldersBody;
use serde_json::json;
use wasm_bindgen::prelude::*;

use crate::history::{get_json, promise};
use crate::js::{JsResult, err};
use crate::{Inner, WebReplica, node_id, replica_err};

/// A page of holders from the server, as [`WebReplica::holders`] answers.
async fn server_holders(
    inner: Rc<Inner>,
    field: String,
    value: String,
    after: Option<String>,
    limit: u32,
) -> JsResult<String> {
    let enc = |s: &str| String::from(js_sys::encode_uri_component(s));
    let mut path = format!(
        "/values?field={}&value={}&limit={}",
        enc(&field),
        enc(&value),
        limit.clamp(1, arbor_client::MAX_HOLDERS_PAGE as u32)
    );
    if let Some(a) = after {
        path.push_str(&format!("&after={}", node_id(&a)?));
    }
    let body: HoldersBody = get_json(&inner, &path).await?;
    let holders: Vec<_> = body
        .holders
        .into_iter()
        .map(|h| {
            let fields: std::collections::BTreeMap<String, String> = h
                .node
                .payloads
                .into_iter()
                .filter_map(|(f, r)| r.value.map(|v| (f, v)))
                .collect();
            json!({"id": h.node.id.to_string(), "parent": h.parent.to_string(), "fields": fields})
        })
        .collect();
    Ok(json!({"holders": holders, "next": body.next.map(|n| n.to_string())}).to_string())
}

#[wasm_bindgen]
impl WebReplica {
    /// A page of the nodes whose `field` holds `value` (compared
    /// normalized), in node id order after `after`, deleted ones left out,
    /// as JSON `{holders: [{id, parent, fields}], next}` (`next`: the
    /// `after` of the next page, or `null`).
    pub fn holders(
        &self,
        field: &str,
        value: &str,
        after: Option<String>,
        limit: u32,
    ) -> Result<String, JsValue> {
        let after = after.as_deref().map(node_id).transpose()?;
        let limit = (limit as usize).clamp(1, arbor_client::MAX_HOLDERS_PAGE);
        let mut r = self.inner.replica_mut()?;
        // The first lookup after a cold start completes the index (a write).
        let pending = !r.value_index_ready().map_err(replica_err)?;
        let page = r.holders(field, value, after, limit).map_err(replica_err)?;
        if pending {
            crate::checkpoint::wrote(&self.inner);
        }
        let mut holders = Vec::with_capacity(page.len());
        for h in &page {
            holders.push(json!({
                "id": h.node.to_string(),
                "parent": h.parent.to_string(),
                "fields": r.fields(h.node).map_err(replica_err)?,
            }));
        }
        let next = match page.last() {
            Some(last) if page.len() == limit => Some(last.node.to_string()),
            _ => None,
        };
        Ok(json!({"holders": holders, "next": next}).to_string())
    }

    /// [`Self::holders`] answered by the server (`GET .../values`), for a
    /// replica that does not hold every holder (a subtree replica, or one
    /// still loading): a promise of the same JSON. Needs `connect`.
    #[wasm_bindgen(js_name = serverHolders)]
    pub fn server_holders(
        &self,
        field: String,
        value: String,
        after: Option<String>,
        limit: u32,
    ) -> js_sys::Promise {
        promise(server_holders(
            self.inner.clone(),
            field,
            value,
            after,
            limit,
        ))
    }

    /// The children of `parent` whose `field` holds `value` (normalized),
    /// in sibling order, as a JSON array of ids: the first is the
    /// canonical one.
    #[wasm_bindgen(js_name = childrenByValue)]
    pub fn children_by_value(
        &self,
        parent: &str,
        field: &str,
        value: &str,
    ) -> Result<String, JsValue> {
        let parent = node_id(parent)?;
        let ids = self
            .inner
            .replica_mut()?
            .children_by_value(parent, field, value)
            .map_err(replica_err)?;
        let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
        serde_json::to_string(&ids).map_err(|e| err(ErrorCode::Worker, &e.to_string()))
    }

    /// Merges the children of `parent` holding `value` into the canonical
    /// one (one undo step); JSON `{canonical, merged}`, or `null` when no
    /// child holds it.
    #[wasm_bindgen(js_name = mergeChildrenByValue)]
    pub fn merge_children_by_value(
        &self,
        parent: &str,
        field: &str,
        value: &str,
    ) -> Result<String, JsValue> {
        let parent = node_id(parent)?;
        let merged = self
            .inner
            .replica_mut()?
            .merge_children_by_value(parent, field, value)
            .map_err(replica_err)?;
        self.inner.wrote();
        Ok(match merged {
            Some((canonical, n)) => {
                json!({"canonical": canonical.to_string(), "merged": n}).to_string()
            }
            None => "null".into(),
        })
    }
}
