//! Calls resent after a tab handover: the owner worker names each call a follower forwarded with a key, the replica records the key with the call's edit, and a resent call is found done instead of being made twice.

use wasm_bindgen::prelude::*;

use crate::{WebReplica, replica_err};

#[wasm_bindgen]
impl WebReplica {
    /// Names the call the next write belongs to (`null` clears it): the
    /// write's transaction records the key. Clear it after the call, which
    /// may have written nothing.
    #[wasm_bindgen(js_name = setCallKey)]
    pub fn set_call_key(&self, key: Option<String>) -> Result<(), JsValue> {
        self.inner.replica_mut()?.set_call_key(key.as_deref());
        Ok(())
    }

    /// Whether the call `key` committed its edit here: `undefined` if not,
    /// else the id of the node it created, or `null` if it created none.
    #[wasm_bindgen(js_name = callDone)]
    pub fn call_done(&self, key: &str) -> Result<JsValue, JsValue> {
        let done = self.inner.replica()?.call_done(key).map_err(replica_err)?;
        Ok(match done {
            None => JsValue::UNDEFINED,
            Some(d) => d
                .created
                .map_or(JsValue::NULL, |n| JsValue::from_str(&n.to_string())),
        })
    }
}
