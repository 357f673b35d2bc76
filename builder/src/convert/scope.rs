//! The typed scope of one stage while its instructions are dispatched (BuildKit's
//! dispatch state): what `$NAME` means, who RUN runs as and where, and the image config
//! the stage is building.

use serde_json::{json, Map, Value};

use super::DEFAULT_PATH;

/// One stage's state between instructions.
pub(super) struct Scope {
    /// ARGs declared in this stage, in declaration order (None: declared without a value).
    pub args: Vec<(String, Option<String>)>,
    /// The environment, `KEY=value` entries in image-config order.
    pub env: Vec<String>,
    /// USER as written (None or empty: root; an empty one from the base is kept as it was).
    pub user: Option<String>,
    /// WORKDIR, absolute; None (or empty, from the base) while nothing set one.
    pub workdir: Option<String>,
    /// SHELL; None: the default `/bin/sh -c`.
    pub shell: Option<Vec<String>>,
    /// MAINTAINER, or the base image's author.
    pub author: Option<String>,
    /// A CMD was given in this stage (then ENTRYPOINT keeps it).
    pub cmd_set: bool,
    /// The base's ONBUILD triggers, taken once by the stage before its own instructions.
    pub triggers: Vec<String>,
    /// The rest of the image config (Cmd, Entrypoint, Labels, ports, volumes, ...).
    pub config: Map<String, Value>,
    /// The stage name progress shows (`None` in a one-stage Dockerfile).
    label: Option<String>,
    /// How many steps are numbered, and the last number given.
    count: usize,
    index: usize,
}

/// The strings of a JSON array (other members skipped).
fn strings(v: Option<Value>) -> Option<Vec<String>> {
    v.and_then(|v| v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect()))
}

impl Scope {
    /// The scope at FROM: the base image's config (`config` of its config document). An
    /// environment without PATH gets docker's default PATH, as BuildKit gives it.
    pub fn from_base(base: &Value) -> Scope {
        let mut config = base.get("config").and_then(Value::as_object).cloned().unwrap_or_default();
        let mut env = strings(config.remove("Env")).unwrap_or_default();
        if !env.iter().any(|kv| kv.split_once('=').map_or(kv.as_str(), |(k, _)| k) == "PATH") {
            env.push(format!("PATH={DEFAULT_PATH}"));
        }
        let user = config.remove("User").and_then(|v| v.as_str().map(str::to_owned));
        let workdir = config.remove("WorkingDir").and_then(|v| v.as_str().map(str::to_owned));
        Scope {
            args: Vec::new(),
            env,
            user,
            workdir,
            shell: strings(config.remove("Shell")),
            author: base.get("author").and_then(Value::as_str).map(str::to_owned),
            cmd_set: false,
            triggers: strings(config.remove("OnBuild")).unwrap_or_default(),
            config,
            label: None,
            count: 0,
            index: 0,
        }
    }

    /// What `$NAME` means at this point of the stage: ENV over ARG, as docker scopes them.
    /// The closure owns a snapshot, so the scope can change while it is used.
    pub fn lookup(&self) -> impl Fn(&str) -> Option<String> + 'static {
        let args = self.args.clone();
        let env = self.env.clone();
        move |n: &str| {
            env.iter()
                .rev()
                .find_map(|kv| kv.split_once('=').filter(|(k, _)| *k == n).map(|(_, v)| v.to_owned()))
                .or_else(|| args.iter().rev().find(|(k, _)| k == n).and_then(|(_, v)| v.clone()))
        }
    }

    /// The working directory RUN and relative paths use.
    pub fn workdir(&self) -> String {
        self.workdir.clone().filter(|w| !w.is_empty()).unwrap_or_else(|| "/".to_owned())
    }

    /// The user RUN runs as and WORKDIR creates directories for; None: root.
    pub fn user(&self) -> Option<String> {
        self.user.clone().filter(|u| !u.is_empty())
    }

    /// The shell of RUN, CMD and ENTRYPOINT in shell form.
    pub fn shell(&self) -> Vec<String> {
        self.shell.clone().unwrap_or_else(|| vec!["/bin/sh".to_owned(), "-c".to_owned()])
    }

    /// Sets `key` in the environment; a variable already there keeps its place.
    pub fn set_env(&mut self, key: &str, value: &str) {
        let entry = format!("{key}={value}");
        match self.env.iter_mut().find(|kv| kv.split_once('=').map_or(kv.as_str(), |(k, _)| k) == key) {
            Some(kv) => *kv = entry,
            None => self.env.push(entry),
        }
    }

    /// Declares an ARG (again: the new value replaces the old in place).
    pub fn set_arg(&mut self, name: &str, value: Option<String>) {
        match self.args.iter_mut().find(|(k, _)| k == name) {
            Some(slot) => slot.1 = value,
            None => self.args.push((name.to_owned(), value)),
        }
    }

    /// Whether the stage declared `name` with ARG.
    pub fn has_arg(&self, name: &str) -> bool {
        self.args.iter().any(|(k, _)| k == name)
    }

    /// Whether the environment sets `name`.
    pub fn has_env(&self, name: &str) -> bool {
        self.env.iter().any(|kv| kv.split_once('=').map_or(kv.as_str(), |(k, _)| k) == name)
    }

    /// The ARGs that have a value, in declaration order.
    pub fn args_with_values(&self) -> impl Iterator<Item = (&str, &str)> {
        self.args.iter().filter_map(|(k, v)| v.as_deref().map(|v| (k.as_str(), v)))
    }

    /// Sets how progress names this stage's steps: `label` and the number of numbered steps.
    pub fn start_naming(&mut self, label: Option<String>, count: usize) {
        self.label = label;
        self.count = count;
        self.index = 0;
    }

    /// The next numbered step's name, as BuildKit writes it: `[label i/n] text`, `i` padded
    /// to the width of `n`.
    pub fn next_name(&mut self, text: &str) -> String {
        self.index += 1;
        let width = self.count.to_string().len();
        let label = self.label.as_ref().map_or_else(String::new, |l| format!("{l} "));
        format!("[{label}{:>width$}/{}] {text}", self.index, self.count)
    }

    /// The image config document of the finished stage (without rootfs and history).
    pub fn into_image(self, platform: &(String, String, Option<String>)) -> Value {
        let mut config = self.config;
        config.insert("Env".into(), json!(self.env));
        if let Some(u) = self.user {
            config.insert("User".into(), json!(u));
        }
        if let Some(w) = self.workdir {
            config.insert("WorkingDir".into(), json!(w));
        }
        if let Some(s) = self.shell {
            config.insert("Shell".into(), json!(s));
        }
        let (os, arch, variant) = platform;
        let mut image = json!({ "architecture": arch, "os": os, "config": Value::Object(config) });
        if let Some(v) = variant {
            image["variant"] = json!(v);
        }
        if let Some(a) = self.author {
            image["author"] = json!(a);
        }
        image
    }
}
