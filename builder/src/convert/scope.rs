//! The typed scope of one stage while its instructions are dispatched (BuildKit's
//! dispatch state): what `$NAME` means, who RUN runs as and where, and the image config
//! the stage is building.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::DEFAULT_PATH;

/// The ARGs a stage ends with: a stage built FROM it starts with them (BuildKit's stages
/// inherit their base stage's build args).
#[derive(Debug, Clone, Default)]
pub struct StageArgs {
    args: Vec<(String, Option<String>)>,
    over_env: std::collections::HashSet<String>,
}

/// One stage's state between instructions.
pub(super) struct Scope {
    /// ARGs declared in this stage, in declaration order (None: declared without a value).
    args: Vec<(String, Option<String>)>,
    /// Where each ARG is in `args`: lookups and updates by name without a scan.
    arg_index: HashMap<String, usize>,
    /// Names whose last setting was an ARG with a value, after an ENV of the same name: the
    /// ARG's value counts for `$NAME` and RUN until the next ENV (BuildKit adds each ARG to
    /// the build's environment), while the image config keeps the ENV.
    arg_over_env: std::collections::HashSet<String>,
    /// The environment, by name in O(1), in image-config order.
    env: Env,
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
        let mut env = Env::new(strings(config.remove("Env")).unwrap_or_default());
        if !env.has("PATH") {
            env.set("PATH", DEFAULT_PATH);
        }
        let user = config.remove("User").and_then(|v| v.as_str().map(str::to_owned));
        let workdir = config.remove("WorkingDir").and_then(|v| v.as_str().map(str::to_owned));
        Scope {
            args: Vec::new(),
            arg_index: HashMap::new(),
            arg_over_env: Default::default(),
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

    /// What `$NAME` means at this point of the stage: the later of ENV and ARG, as BuildKit
    /// scopes them (an ENV after an ARG wins over it, an ARG with a value after an ENV wins
    /// until the next ENV). It borrows the scope (no copy: a Dockerfile of n ENV lines stays
    /// linear), so an instruction whose words all see the scope before it finishes expanding
    /// first; it is `Copy`, so the borrow ends at its last use.
    pub fn lookup(&self) -> impl Fn(&str) -> Option<String> + Copy + '_ {
        move |n: &str| {
            let arg = || self.arg_index.get(n).and_then(|&i| self.args[i].1.clone());
            match self.arg_over_env.contains(n) {
                true => arg(),
                false => self.env.value(n).map(str::to_owned).or_else(arg),
            }
        }
    }

    /// The environment of a RUN: the image's ENV, each ARG that came after an ENV of its
    /// name in that ENV's place, then the other ARGs with a value.
    pub fn run_env(&self) -> Vec<String> {
        let look = self.lookup();
        let mut env: Vec<String> = self
            .env
            .entries
            .iter()
            .map(|e| match self.arg_over_env.contains(name_of(e)) {
                true => format!("{}={}", name_of(e), look(name_of(e)).unwrap_or_default()),
                false => e.clone(),
            })
            .collect();
        for (k, v) in self.args_with_values() {
            if !self.env.has(k) {
                env.push(format!("{k}={v}"));
            }
        }
        env
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
        self.env.set(key, value);
        self.arg_over_env.remove(key);
    }

    /// Declares an ARG (again: the new value replaces the old in place).
    pub fn set_arg(&mut self, name: &str, value: Option<String>) {
        if value.is_some() && self.env.has(name) {
            self.arg_over_env.insert(name.to_owned());
        }
        match self.arg_index.get(name) {
            Some(&i) => self.args[i].1 = value,
            None => {
                self.arg_index.insert(name.to_owned(), self.args.len());
                self.args.push((name.to_owned(), value));
            }
        }
    }

    /// The ARGs declared so far, for a stage built FROM this one.
    pub fn stage_args(&self) -> StageArgs {
        StageArgs { args: self.args.clone(), over_env: self.arg_over_env.clone() }
    }

    /// Starts with the ARGs of the stage this one is built FROM.
    pub fn inherit(&mut self, from: StageArgs) {
        for (name, value) in from.args {
            self.arg_index.insert(name.clone(), self.args.len());
            self.args.push((name, value));
        }
        self.arg_over_env = from.over_env;
    }

    /// Whether the stage declared `name` with ARG.
    pub fn has_arg(&self, name: &str) -> bool {
        self.arg_index.contains_key(name)
    }

    /// The environment's `KEY=value` entries, in image-config order.
    #[cfg(test)]
    pub fn env(&self) -> &[String] {
        &self.env.entries
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
    pub fn into_image(self, platform: &oci::Platform) -> Value {
        let mut config = self.config;
        config.insert("Env".into(), json!(self.env.entries));
        if let Some(u) = self.user {
            config.insert("User".into(), json!(u));
        }
        if let Some(w) = self.workdir {
            config.insert("WorkingDir".into(), json!(w));
        }
        if let Some(s) = self.shell {
            config.insert("Shell".into(), json!(s));
        }
        let mut image =
            json!({ "architecture": platform.architecture, "os": platform.os, "config": Value::Object(config) });
        if let Some(v) = &platform.variant {
            image["variant"] = json!(v);
        }
        if let Some(a) = self.author {
            image["author"] = json!(a);
        }
        image
    }
}

/// The environment as the image config lists it (`KEY=value` entries, a variable set again
/// keeping its place), with each name's entries indexed so that ENV and `$NAME` cost O(1).
struct Env {
    /// The entries, in order.
    entries: Vec<String>,
    /// Each name's first entry: the one ENV replaces (and the one that says a name is set).
    first: HashMap<String, usize>,
    /// Each name's last entry with a `=`: the one `$NAME` reads (a base image may list a
    /// name twice).
    last: HashMap<String, usize>,
}

/// The name of an entry: up to its first `=`, or all of it.
fn name_of(entry: &str) -> &str {
    entry.split_once('=').map_or(entry, |(k, _)| k)
}

impl Env {
    /// The environment of a base image's config.
    fn new(entries: Vec<String>) -> Env {
        let (mut first, mut last) = (HashMap::new(), HashMap::new());
        for (i, kv) in entries.iter().enumerate() {
            first.entry(name_of(kv).to_owned()).or_insert(i);
            if let Some((k, _)) = kv.split_once('=') {
                last.insert(k.to_owned(), i);
            }
        }
        Env { entries, first, last }
    }

    /// Whether an entry names `name`.
    fn has(&self, name: &str) -> bool {
        self.first.contains_key(name)
    }

    /// The value `$name` reads.
    fn value(&self, name: &str) -> Option<&str> {
        let kv = &self.entries[*self.last.get(name)?];
        kv.split_once('=').map(|(_, v)| v)
    }

    /// Sets `key` to `value`: in place of its first entry, else appended.
    fn set(&mut self, key: &str, value: &str) {
        let entry = format!("{key}={value}");
        let i = match self.first.get(key) {
            Some(&i) => {
                self.entries[i] = entry;
                i
            }
            None => {
                self.first.insert(key.to_owned(), self.entries.len());
                self.entries.push(entry);
                self.entries.len() - 1
            }
        };
        let last = self.last.entry(key.to_owned()).or_insert(i);
        *last = (*last).max(i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_keeps_docker_order_and_reads_what_the_list_scan_read() {
        // A base image may list a name twice, or a bare name: `$A` reads the last `A=`,
        // ENV replaces the first, and a bare `B` counts as set but has no value.
        let base = json!({"config": {"Env": ["A=1", "B", "PATH=/bin", "A=2"]}});
        let mut scope = Scope::from_base(&base);
        assert_eq!(scope.lookup()("A").as_deref(), Some("2"));
        assert!(scope.env().iter().any(|e| e == "B") && scope.lookup()("B").is_none());
        scope.set_env("A", "3");
        scope.set_env("C", "4");
        scope.set_env("PATH", "/usr/bin:/bin");
        assert_eq!(scope.env(), ["A=3", "B", "PATH=/usr/bin:/bin", "A=2", "C=4"]);
        assert_eq!(scope.lookup()("A").as_deref(), Some("2"), "the later duplicate still wins");
        scope.set_env("B", "5");
        assert_eq!(scope.lookup()("B").as_deref(), Some("5"));
    }

    #[test]
    fn args_redeclared_keep_their_place_and_env_wins_over_them() {
        let mut scope = Scope::from_base(&json!({}));
        assert_eq!(scope.env(), [format!("PATH={DEFAULT_PATH}")], "docker's default PATH");
        scope.set_arg("X", Some("a".into()));
        scope.set_arg("Y", None);
        scope.set_arg("X", Some("b".into()));
        assert_eq!(scope.args_with_values().collect::<Vec<_>>(), [("X", "b")]);
        assert!(scope.has_arg("Y") && scope.lookup()("Y").is_none());
        scope.set_env("X", "env");
        assert_eq!(scope.lookup()("X").as_deref(), Some("env"), "an ENV after an ARG wins");
        assert!(scope.run_env().contains(&"X=env".to_owned()));
    }

    #[test]
    fn an_arg_after_an_env_of_its_name_wins_for_the_build_until_the_next_env() {
        let mut scope = Scope::from_base(&json!({"config": {"Env": ["E=env1", "PATH=/bin"]}}));
        scope.set_arg("E", None);
        assert_eq!(scope.lookup()("E").as_deref(), Some("env1"), "an ARG without a value changes nothing");
        scope.set_arg("E", Some("arg".into()));
        assert_eq!(scope.lookup()("E").as_deref(), Some("arg"));
        assert_eq!(scope.run_env(), ["E=arg", "PATH=/bin"], "in the ENV's place");
        assert_eq!(scope.env(), ["E=env1", "PATH=/bin"], "the image config keeps the ENV");
        scope.set_env("E", "env2");
        assert_eq!(scope.lookup()("E").as_deref(), Some("env2"));
        assert_eq!(scope.run_env(), ["E=env2", "PATH=/bin"]);
    }
}
