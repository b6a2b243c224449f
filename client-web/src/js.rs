//! Bridges to browser APIs: errors as `{code, message}`, timers, feature checks.

use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

/// A result whose error is a `{code, message}` object for JavaScript.
pub type JsResult<T> = Result<T, JsValue>;

/// A `{code, message}` error object (the worker turns it into `ArborError`).
pub fn err(code: arbor_shared::ErrorCode, message: &str) -> JsValue {
    let o = js_sys::Object::new();
    let _ = js_sys::Reflect::set(&o, &"code".into(), &code.as_str().into());
    let _ = js_sys::Reflect::set(&o, &"message".into(), &message.into());
    o.into()
}

/// A JS exception's message (for logs and statuses).
pub fn message(e: &JsValue) -> String {
    if let Some(s) = e.as_string() {
        return s;
    }
    js_sys::Reflect::get(e, &"message".into())
        .ok()
        .and_then(|m| m.as_string())
        .unwrap_or_else(|| format!("{e:?}"))
}

/// Resolves after `ms` milliseconds (`setTimeout` on the global scope, so
/// it works in workers and pages alike).
pub async fn sleep_ms(ms: u32) {
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        let global = js_sys::global();
        if let Ok(set_timeout) = js_sys::Reflect::get(&global, &"setTimeout".into()) {
            if let Ok(f) = set_timeout.dyn_into::<js_sys::Function>() {
                let _ = f.call2(&global, &resolve, &JsValue::from(ms));
                return;
            }
        }
        let _ = resolve.call0(&JsValue::NULL);
    });
    let _ = JsFuture::from(promise).await;
}

/// True if this scope has OPFS sync access handles (a dedicated worker in a
/// secure context of a browser that has them).
pub fn has_opfs() -> bool {
    let global = js_sys::global();
    js_sys::Reflect::has(&global, &"FileSystemSyncAccessHandle".into()).unwrap_or(false)
}

/// A random number in [0, 1) (the session's jitter seed).
pub fn random() -> f64 {
    js_sys::Math::random()
}

/// `console.warn(message)` on the global scope.
pub fn warn(message: &str) {
    let global = js_sys::global();
    if let Ok(console) = js_sys::Reflect::get(&global, &"console".into())
        && let Ok(f) = js_sys::Reflect::get(&console, &"warn".into())
        && let Ok(f) = f.dyn_into::<js_sys::Function>()
    {
        let _ = f.call1(&console, &JsValue::from_str(message));
    }
}
