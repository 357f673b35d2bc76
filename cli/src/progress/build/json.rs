//! `--progress rawjson`: one JSON object per event, one per line, for tools to parse.

use builder::progress::Event;

/// The JSON object of one event.
pub fn event(e: &Event) -> serde_json::Value {
    match e {
        Event::Started { id, name } => serde_json::json!({ "vertex": id, "name": name, "started": true }),
        Event::Cached { id, name } => serde_json::json!({ "vertex": id, "name": name, "cached": true }),
        Event::Miss { id, reason } => serde_json::json!({ "vertex": id, "miss": reason }),
        Event::Output { id, data } => serde_json::json!({ "vertex": id, "output": String::from_utf8_lossy(data) }),
        Event::Done { id, took, error } => {
            serde_json::json!({ "vertex": id, "completed": true, "seconds": took.as_secs_f64(), "error": error })
        }
        Event::Note { text } => serde_json::json!({ "note": text }),
        Event::Warning { text } => serde_json::json!({ "warning": text }),
    }
}

/// The last object: the result.
pub fn done(built: &builder::Built, took: std::time::Duration) -> serde_json::Value {
    serde_json::json!({
        "done": true,
        "digest": built.manifest.digest.to_string(),
        "config": built.config.to_string(),
        "seconds": took.as_secs_f64(),
    })
}
