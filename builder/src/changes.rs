//! `commit --change`: Dockerfile instructions applied to an image config, as docker's
//! `commit -c` applies them. docker takes CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD,
//! USER, VOLUME and WORKDIR; variables expand from the config's own Env.

use serde_json::{json, Map, Value};

use crate::dockerfile::{self, expand, CommandForm, Kind, Word};
use crate::error::{Error, Result};

/// Applies each of `changes` (one instruction each, in order) to `config`, the `config`
/// object of an image config.
pub fn apply(config: &mut Map<String, Value>, changes: &[String]) -> Result<()> {
    let mut cmd_set = false;
    for change in changes {
        let file = dockerfile::parse("--change", &format!("FROM scratch\n{change}\n"))?;
        let stage = file.stages.first().ok_or_else(|| invalid(change, "no instruction"))?;
        let [instruction] = stage.instructions.as_slice() else {
            return Err(invalid(change, "one instruction per --change"));
        };
        let escape = file.escape;
        let env = env_map(config);
        let lookup = |name: &str| env.get(name).cloned();
        let word = |w: &Word| expand::expand_word(&w.raw, escape, &lookup).map_err(|e| invalid(change, e.to_string()));
        let pairs = |w: &Word| expand::key_values(&w.raw, escape, &lookup).map_err(|e| invalid(change, e.to_string()));
        match &instruction.kind {
            Kind::Cmd(form) => {
                config.insert("Cmd".into(), json!(command(config, form)));
                cmd_set = true;
            }
            Kind::Entrypoint(form) => {
                config.insert("Entrypoint".into(), json!(command(config, form)));
                // As a Dockerfile's ENTRYPOINT: the inherited CMD goes, unless this change set one.
                if !cmd_set {
                    config.insert("Cmd".into(), Value::Null);
                }
            }
            Kind::Env(w) => set_env(config, pairs(w)?),
            Kind::Label(w) => {
                let labels = object(config, "Labels");
                labels.extend(pairs(w)?.into_iter().map(|(k, v)| (k, Value::String(v))));
            }
            Kind::Expose(words) => {
                for w in words {
                    let port = word(w)?;
                    let port = if port.contains('/') { port.to_lowercase() } else { format!("{port}/tcp") };
                    object(config, "ExposedPorts").insert(port, json!({}));
                }
            }
            Kind::Volume(words) => {
                for w in words {
                    object(config, "Volumes").insert(word(w)?, json!({}));
                }
            }
            Kind::User(w) => _ = config.insert("User".into(), Value::String(word(w)?)),
            Kind::Workdir(w) => {
                let base = config.get("WorkingDir").and_then(Value::as_str).filter(|d| !d.is_empty()).unwrap_or("/");
                let dir = crate::convert::join_path(base, &word(w)?);
                config.insert("WorkingDir".into(), Value::String(dir));
            }
            Kind::Onbuild(text) => {
                let list = config.entry("OnBuild").or_insert_with(|| json!([]));
                if !list.is_array() {
                    *list = json!([]);
                }
                if let Some(a) = list.as_array_mut() {
                    a.push(Value::String(text.clone()));
                }
            }
            _ => return Err(invalid(
                change,
                "is not a valid change command (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, USER, VOLUME, WORKDIR)",
            )),
        }
    }
    Ok(())
}

fn invalid(change: &str, why: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("--change {change:?}: {why}"))
}

/// The exec form as written; the shell form through the config's SHELL (`/bin/sh -c`).
fn command(config: &Map<String, Value>, form: &CommandForm) -> Vec<String> {
    match form {
        CommandForm::Exec(args) => args.clone(),
        CommandForm::Shell(line) => {
            let shell: Option<Vec<String>> = config.get("Shell").and_then(|s| serde_json::from_value(s.clone()).ok());
            let mut words = shell.filter(|s| !s.is_empty()).unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()]);
            words.push(line.clone());
            words
        }
    }
}

/// The config's Env as a map, for expanding variables.
fn env_map(config: &Map<String, Value>) -> std::collections::HashMap<String, String> {
    let list = config.get("Env").and_then(Value::as_array).cloned().unwrap_or_default();
    list.iter().filter_map(Value::as_str).filter_map(|e| e.split_once('=')).map(|(k, v)| (k.into(), v.into())).collect()
}

/// Sets variables in the config's Env, in place where one is already set, else at the end.
fn set_env(config: &mut Map<String, Value>, pairs: Vec<(String, String)>) {
    let mut env: Vec<String> = config
        .get("Env")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(String::from).collect())
        .unwrap_or_default();
    for (k, v) in pairs {
        let line = format!("{k}={v}");
        match env.iter_mut().find(|e| e.split_once('=').is_some_and(|(name, _)| name == k)) {
            Some(slot) => *slot = line,
            None => env.push(line),
        }
    }
    config.insert("Env".into(), json!(env));
}

/// The object at `key`, made (or made an object) when it is not one.
fn object<'a>(config: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let slot = config.entry(key).or_insert_with(|| json!({}));
    if !slot.is_object() {
        *slot = json!({});
    }
    slot.as_object_mut().expect("made an object above")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(base: Value, changes: &[&str]) -> Value {
        let mut config = base.as_object().cloned().unwrap_or_default();
        apply(&mut config, &changes.iter().map(|c| c.to_string()).collect::<Vec<_>>()).unwrap();
        Value::Object(config)
    }

    #[test]
    fn changes_set_what_a_dockerfile_would() {
        let base = json!({"Env": ["PATH=/bin", "A=1"], "Cmd": ["sh"], "WorkingDir": "/srv"});
        let c = applied(
            base,
            &[
                "ENV A=2 B=$A",
                "LABEL version=\"1.0\" team=web",
                "EXPOSE 8080 53/UDP",
                "VOLUME /data",
                "USER app",
                "WORKDIR sub",
                "CMD [\"serve\", \"--port\", \"8080\"]",
                "ONBUILD RUN make",
            ],
        );
        assert_eq!(c["Env"], json!(["PATH=/bin", "A=2", "B=1"]), "in place, expanded from the Env before");
        assert_eq!(c["Labels"], json!({"version": "1.0", "team": "web"}));
        assert_eq!(c["ExposedPorts"], json!({"8080/tcp": {}, "53/udp": {}}));
        assert_eq!(c["Volumes"], json!({"/data": {}}));
        assert_eq!((c["User"].as_str(), c["WorkingDir"].as_str()), (Some("app"), Some("/srv/sub")));
        assert_eq!(c["Cmd"], json!(["serve", "--port", "8080"]));
        assert_eq!(c["OnBuild"], json!(["RUN make"]));
    }

    #[test]
    fn entrypoint_drops_the_inherited_cmd_and_shell_forms_use_sh() {
        let c = applied(json!({"Cmd": ["sh"]}), &["ENTRYPOINT exec app"]);
        assert_eq!((c["Entrypoint"].clone(), c["Cmd"].clone()), (json!(["/bin/sh", "-c", "exec app"]), Value::Null));
        let c = applied(json!({"Cmd": ["sh"]}), &["CMD x", "ENTRYPOINT [\"app\"]"]);
        assert_eq!(c["Cmd"], json!(["/bin/sh", "-c", "x"]), "a CMD of the same commit stays");
    }

    #[test]
    fn other_instructions_and_bad_ones_are_errors() {
        for bad in ["RUN make", "COPY a b", "FROM x", "ENV", "bogus thing"] {
            let mut config = Map::new();
            assert!(apply(&mut config, &[bad.to_string()]).is_err(), "{bad}");
        }
    }
}
