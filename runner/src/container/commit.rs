//! The image config `berth commit` writes: the container's effective settings (the image's
//! config overridden by `run`'s flags), as docker's commit writes the container's config.

use serde_json::{json, Map, Value};

use super::Config;

/// The `config` object of an image committed from the container `c`, made from `base` (the
/// `config` object of the image it runs, or null): the process (Entrypoint and Cmd apart),
/// Env, WorkingDir, User, StopSignal, the health check in force, Labels (the image's with
/// `--label`'s), the published ports among ExposedPorts, and the anonymous volumes of
/// `-v /path` among Volumes; the rest carries over from `base`.
pub fn image_config(c: &Config, base: &Value) -> Map<String, Value> {
    let mut out: Map<String, Value> = base.as_object().cloned().unwrap_or_default();
    let split = if c.args.starts_with(&c.entrypoint) { c.entrypoint.len() } else { 0 };
    let (entrypoint, cmd) = c.args.split_at(split);
    out.insert("Entrypoint".into(), words(entrypoint));
    out.insert("Cmd".into(), words(cmd));
    out.insert("Env".into(), json!(c.config_env()));
    out.insert("WorkingDir".into(), json!(c.cwd));
    out.insert("User".into(), json!(c.user.clone().unwrap_or_default()));
    if c.stop_signal != "SIGTERM" || out.get("StopSignal").is_some_and(|s| !s.is_null()) {
        out.insert("StopSignal".into(), json!(c.stop_signal));
    }
    if let Some(h) = &c.health {
        out.insert("Healthcheck".into(), h.docker_json());
    }
    if !c.labels.is_empty() {
        out.insert("Labels".into(), json!(c.labels));
    }
    add_keys(&mut out, "ExposedPorts", c.ports.iter().map(|p| format!("{}/{}", p.container_port, p.proto)));
    add_keys(&mut out, "Volumes", c.volumes.iter().filter(|v| v.in_config()).map(|v| v.container.clone()));
    out
}

/// Adds `keys` to the set `field` (docker's `{"key": {}}` objects), made when missing.
fn add_keys(out: &mut Map<String, Value>, field: &str, keys: impl Iterator<Item = String>) {
    let mut keys = keys.peekable();
    if keys.peek().is_none() {
        return;
    }
    let set = out.entry(field).or_insert_with(|| json!({}));
    if !set.is_object() {
        *set = json!({});
    }
    if let Some(map) = set.as_object_mut() {
        for k in keys {
            map.entry(k).or_insert_with(|| json!({}));
        }
    }
}

/// docker's null for no words.
fn words(w: &[String]) -> Value {
    if w.is_empty() {
        Value::Null
    } else {
        json!(w)
    }
}
