//! Conversion without root: a fake `resolve` gives base images with chosen configs, and
//! the tests read the graph's ops, the step names, the config and the history.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde_json::{json, Value};

use super::*;
use crate::graph::{CopyOp, ExecOp};

/// A base image `img` (any reference) with this config document.
fn base(config: &Value) -> BaseImage {
    BaseImage {
        manifest: format!("sha256:{}", "a".repeat(64)).parse().unwrap(),
        layers: vec![],
        config: config.clone(),
    }
}

/// Converts `text` for `target` with these build args, every base image having `config`;
/// also returns the references resolved.
fn convert_with(
    text: &str,
    target: Option<&str>,
    args: &[(&str, &str)],
    config: &Value,
) -> (Result<Converted>, Vec<String>) {
    let df = crate::dockerfile::parse("Dockerfile", text).unwrap();
    let build_args: BTreeMap<String, String> = args.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let seen = Mutex::new(Vec::new());
    let resolve = |r: &str, _: &oci::Platform| {
        seen.lock().unwrap().push(r.to_owned());
        Ok(base(config))
    };
    let inputs = Inputs {
        build_args: &build_args,
        target_platforms: vec!["linux/arm64/v8".parse().unwrap()],
        no_cache: false,
        no_cache_filter: &[],
        host_network: true,
        allow_insecure: false,
        extra_hosts: &[],
        resolve: &resolve,
        named: &BTreeMap::new(),
    };
    let c = convert(&df, target, &inputs);
    (c, seen.into_inner().unwrap())
}

fn conv(text: &str, args: &[(&str, &str)], config: &Value) -> Converted {
    convert_with(text, None, args, config).0.unwrap()
}

/// The RUN vertices, in graph order.
fn runs(c: &Converted) -> Vec<&ExecOp> {
    c.graph
        .vertices
        .iter()
        .filter_map(|v| match &v.op {
            Op::Exec(e) => Some(e),
            _ => None,
        })
        .collect()
}

/// The COPY/ADD/WORKDIR vertices, in graph order.
fn copies(c: &Converted) -> Vec<&CopyOp> {
    c.graph
        .vertices
        .iter()
        .filter_map(|v| match &v.op {
            Op::Copy(op) => Some(op),
            _ => None,
        })
        .collect()
}

fn names(c: &Converted) -> Vec<&str> {
    c.graph.vertices.iter().map(|v| v.name.as_str()).collect()
}

/// The target stage's `created_by` texts.
fn history(c: &Converted) -> Vec<&str> {
    c.images[0].stage().steps.iter().map(|(s, _)| s.as_str()).collect()
}

fn config(c: &Converted) -> &Value {
    &c.images[0].stage().config["config"]
}

fn has(env: &[String], kv: &str) -> bool {
    env.iter().any(|e| e == kv)
}

fn var<'e>(env: &'e [String], name: &str) -> Option<&'e str> {
    env.iter().find_map(|e| e.strip_prefix(name).and_then(|r| r.strip_prefix('=')))
}

#[test]
fn args_are_scoped_like_docker() {
    let (c, seen) = convert_with(
        "ARG GLOBAL=g1\nARG KEPT=k1\nARG BASE=img:${KEPT}\nFROM ${BASE}\n\
         ENV BEFORE=\"[$GLOBAL]\"\nRUN one\n\
         ARG GLOBAL\nARG KEPT\nARG LOCAL=l1\nARG OVER=default\nRUN two\n\
         ENV LOCAL=from-env\nRUN three\n",
        None,
        &[("GLOBAL", "override"), ("OVER", "cli"), ("UNDECLARED", "nope")],
        &json!({}),
    );
    let c = c.unwrap();
    assert_eq!(seen, ["img:k1"], "global ARGs expand in FROM");
    let r = runs(&c);
    // Before `ARG GLOBAL` the stage does not see the global.
    assert_eq!(var(&r[0].env, "BEFORE"), Some("[]"));
    assert_eq!(var(&r[0].env, "GLOBAL"), None);
    // `ARG NAME` re-imports the global (with its --build-arg override); a --build-arg
    // overrides a stage default; an undeclared build arg reaches nothing.
    for kv in ["GLOBAL=override", "KEPT=k1", "LOCAL=l1", "OVER=cli"] {
        assert!(has(&r[1].env, kv), "{kv} in {:?}", r[1].env);
    }
    assert!(r.iter().all(|e| var(&e.env, "UNDECLARED").is_none()));
    // ENV wins over ARG.
    assert_eq!(var(&r[2].env, "LOCAL"), Some("from-env"));
    assert!(!has(&r[2].env, "LOCAL=l1"));
}

#[test]
fn an_arg_declared_again_keeps_its_value_and_defaults_see_the_names_before_them() {
    let c = conv(
        "FROM img\nARG VERSION=1.2.3\nARG VERSION\nARG NAME=app REL=${NAME}-${VERSION}\nRUN one\n",
        &[],
        &json!({}),
    );
    let r = runs(&c);
    assert_eq!(var(&r[0].env, "VERSION"), Some("1.2.3"), "{:?}", r[0].env);
    assert_eq!(var(&r[0].env, "REL"), Some("app-1.2.3"), "{:?}", r[0].env);
}

#[test]
fn history_and_step_names_show_expanded_values_as_buildkit_records_them() {
    let c = conv(
        "FROM img\nARG VERSION=1.0\nENV APP_HOME=/srv/app NAME=\"berth demo\"\nWORKDIR ${APP_HOME}\n\
         LABEL version=$VERSION\nCOPY --chown=1000 app-$VERSION/ ./\nRUN echo \"$VERSION\"\nUSER app\n\
         EXPOSE 8080 53/udp\nVOLUME /data\nSTOPSIGNAL SIGTERM\nCMD echo \"hi\"\nMAINTAINER me\nWORKDIR sub\n",
        &[("VERSION", "2.0")],
        &json!({}),
    );
    assert_eq!(
        history(&c),
        [
            "ARG VERSION=1.0",
            "ENV APP_HOME=/srv/app NAME=berth demo",
            "WORKDIR /srv/app",
            "LABEL version=2.0",
            "COPY app-2.0/ ./ # buildkit",
            "RUN |1 VERSION=2.0 /bin/sh -c echo \"$VERSION\" # buildkit",
            "USER app",
            "EXPOSE map[53/udp:{} 8080/tcp:{}]",
            "VOLUME [/data]",
            "STOPSIGNAL SIGTERM",
            "CMD [\"/bin/sh\" \"-c\" \"echo \\\"hi\\\"\"]",
            "MAINTAINER me",
            "WORKDIR /srv/app/sub",
        ]
    );
    // Only FROM and the vertex steps are numbered; a one-stage file has no stage label.
    assert_eq!(
        names(&c),
        [
            "[1/5] FROM img",
            "[2/5] WORKDIR /srv/app",
            "[3/5] COPY --chown=1000 app-2.0/ ./",
            "[4/5] RUN echo \"$VERSION\"",
            "[5/5] WORKDIR sub",
        ]
    );
    assert_eq!(c.images[0].stages[&0].config["author"], "me");
    assert_eq!(config(&c)["WorkingDir"], "/srv/app/sub");
    assert_eq!(config(&c)["Labels"]["version"], "2.0");
}

#[test]
fn stages_are_labelled_and_numbers_padded_as_buildkit_does() {
    let runs10: String = (0..10).map(|i| format!("RUN step{i}\n")).collect();
    let text = format!("FROM img-build AS build\n{runs10}FROM img\nENV A=1\nCOPY --from=build /x /x\n");
    let c = conv(&text, &[], &json!({}));
    let names = names(&c);
    assert!(names.contains(&"[build  1/11] FROM img-build"), "{names:?}");
    assert!(names.contains(&"[stage-1 1/2] FROM img"), "{names:?}");
    assert!(names.contains(&"[build  2/11] RUN step0"), "{names:?}");
    assert!(names.contains(&"[build 11/11] RUN step9"), "{names:?}");
    assert!(names.contains(&"[stage-1 2/2] COPY --from=build /x /x"), "{names:?}");
}

#[test]
fn platform_args_are_defined_for_from_and_after_arg() {
    let (c, seen) = convert_with(
        "ARG TARGETARCH\nFROM --platform=$BUILDPLATFORM img-$TARGETARCH AS build\nARG TARGETOS TARGETPLATFORM\n\
         RUN build\nFROM img-$TARGETARCH\nCOPY --from=build /out /out\nRUN check\n",
        None,
        &[],
        &json!({}),
    );
    let c = c.unwrap();
    assert_eq!(seen, ["img-arm64", "img-arm64"], "one base, resolved for the build platform and the target");
    let r = runs(&c);
    assert!(has(&r[0].env, "TARGETOS=linux") && has(&r[0].env, "TARGETPLATFORM=linux/arm64"), "{:?}", r[0].env);
    assert!(var(&r[1].env, "TARGETOS").is_none(), "platform ARGs need an ARG line in a stage");
    let host = oci::Platform::host().to_string();
    assert_eq!(r[0].platform, host, "the build stage runs on the host's platform");
    assert_eq!(r[1].platform, "linux/arm64", "the final stage on the target's");
    let want: Vec<String> = c.run_platforms.iter().map(ToString::to_string).collect();
    assert!(want.contains(&host) && want.contains(&"linux/arm64".to_owned()), "{want:?}");
}

#[test]
fn a_stage_of_another_platform_records_it_and_a_bad_one_is_refused_where_written() {
    let c = conv("FROM --platform=linux/s390x img\nRUN x\n", &[], &json!({}));
    let out = c.images[0].stage();
    assert_eq!(out.config["architecture"], "s390x");
    assert_eq!(runs(&c)[0].platform, "linux/s390x");
    let (err, _) = convert_with("FROM img\nFROM --platform=linux/ img\n", None, &[], &json!({}));
    let err = err.err().unwrap().to_string();
    assert!(err.contains("Dockerfile:2:") && err.contains("linux/"), "{err}");
}

#[test]
fn onbuild_triggers_of_the_base_run_first_and_are_not_inherited() {
    let base = json!({ "config": { "OnBuild": ["RUN echo triggered", "ENV T=1"] } });
    let c = conv("FROM img\nRUN mine\nONBUILD RUN later\n", &[], &base);
    assert_eq!(names(&c), ["[1/3] FROM img", "[2/3] RUN echo triggered", "[3/3] RUN mine"]);
    let r = runs(&c);
    assert_eq!(r[0].args, ["/bin/sh", "-c", "echo triggered"]);
    assert!(has(&r[1].env, "T=1"), "a trigger's ENV holds for the stage");
    assert_eq!(
        history(&c),
        ["RUN /bin/sh -c echo triggered # buildkit", "ENV T=1", "RUN /bin/sh -c mine # buildkit", "ONBUILD RUN later"]
    );
    assert_eq!(config(&c)["OnBuild"], json!(["RUN later"]), "the base's triggers are spent, the stage's own kept");
}

#[test]
fn entrypoint_drops_an_inherited_cmd_but_keeps_one_set_in_the_stage() {
    let base = json!({ "config": { "Cmd": ["base-cmd"] } });
    let cfg = |text: &str| config(&conv(text, &[], &base)).clone();
    assert!(cfg("FROM img\nENTRYPOINT [\"/app\"]\n").get("Cmd").is_none());
    assert_eq!(cfg("FROM img\nCMD [\"x\"]\nENTRYPOINT [\"/app\"]\n")["Cmd"], json!(["x"]));
    let c = cfg("FROM img\nENTRYPOINT [\"/app\"]\nCMD [\"y\"]\n");
    assert_eq!((&c["Entrypoint"], &c["Cmd"]), (&json!(["/app"]), &json!(["y"])));
    assert_eq!(cfg("FROM img\nRUN x\n")["Cmd"], json!(["base-cmd"]), "no ENTRYPOINT: the base's CMD stays");
    let c = conv("FROM img\nSHELL [\"/bin/bash\", \"-c\"]\nENTRYPOINT run it\n", &[], &base);
    assert_eq!(config(&c)["Entrypoint"], json!(["/bin/bash", "-c", "run it"]));
    assert_eq!(config(&c)["Shell"], json!(["/bin/bash", "-c"]));
    assert_eq!(history(&c), ["SHELL [/bin/bash -c]", "ENTRYPOINT [\"/bin/bash\" \"-c\" \"run it\"]"]);
}

#[test]
fn an_empty_exec_form_resets_entrypoint_and_cmd() {
    let base = json!({ "config": { "Entrypoint": ["/base"], "Cmd": ["base-cmd"] } });
    for text in ["FROM img\nENTRYPOINT []\n", "FROM img\nENTRYPOINT [ ]\n"] {
        let c = config(&conv(text, &[], &base)).clone();
        assert_eq!(c["Entrypoint"], serde_json::Value::Null, "{text}");
        assert!(c.get("Cmd").is_none(), "{text}: the base's CMD goes with its entrypoint");
    }
    let c = config(&conv("FROM img\nCMD []\n", &[], &base)).clone();
    assert_eq!((&c["Entrypoint"], &c["Cmd"]), (&json!(["/base"]), &json!([])));
    let c = config(&conv("FROM img\nENTRYPOINT [\"/a\"]\nCMD echo []\n", &[], &base)).clone();
    assert_eq!(c["Cmd"], json!(["/bin/sh", "-c", "echo []"]), "brackets inside a shell form are text");
}

#[test]
fn a_base_without_path_gets_dockers_default_path() {
    let c = conv("FROM scratch\nENV PATH=/opt/app/bin:$PATH\nRUN chmod\n", &[], &json!({}));
    let want = format!("PATH=/opt/app/bin:{DEFAULT_PATH}");
    assert_eq!(config(&c)["Env"], json!([want]));
    assert_eq!(runs(&c)[0].env, std::slice::from_ref(&want));
    assert_eq!(history(&c)[0], format!("ENV {want}"));
    // An imported base: other variables, no PATH.
    let c = conv("FROM img\nARG P=$PATH\nRUN x\n", &[], &json!({ "config": { "Env": ["A=1"] } }));
    assert_eq!(config(&c)["Env"], json!(["A=1", format!("PATH={DEFAULT_PATH}")]));
    assert!(has(&runs(&c)[0].env, &format!("P={DEFAULT_PATH}")));
}

#[test]
fn env_redefined_keeps_its_place() {
    let base = json!({ "config": { "Env": ["A=1", "PATH=/bin", "B=2"] } });
    let c = conv("FROM img\nENV PATH=/x:$PATH A=3 C=4\n", &[], &base);
    assert_eq!(config(&c)["Env"], json!(["A=3", "PATH=/x:/bin", "B=2", "C=4"]));
}

#[test]
fn proxy_build_args_reach_run_but_not_its_key_or_history() {
    let text = "FROM img\nRUN apt-get update\n";
    let one = conv(text, &[("HTTP_PROXY", "http://one.invalid:3128"), ("no_proxy", "local")], &json!({}));
    let two = conv(text, &[("HTTP_PROXY", "http://two.invalid:3128")], &json!({}));
    let none = conv(text, &[], &json!({}));
    let key = |c: &Converted| serde_json::to_string(&c.graph.vertices[1].op).unwrap();
    assert_eq!(key(&one), key(&two), "the proxy is not part of the RUN's cache key");
    assert_eq!(key(&one), key(&none));
    let env = runs(&one)[0].process_env();
    assert!(has(&env, "HTTP_PROXY=http://one.invalid:3128") && has(&env, "no_proxy=local"), "{env:?}");
    // Either spelling given, both reach RUN (curl and wget read only the lower-case one).
    assert!(has(&env, "http_proxy=http://one.invalid:3128") && has(&env, "NO_PROXY=local"), "{env:?}");
    let lower = conv(text, &[("https_proxy", "http://p.invalid"), ("ALL_PROXY", "socks5://s.invalid")], &json!({}));
    let env = runs(&lower)[0].process_env();
    for v in ["HTTPS_PROXY=http://p.invalid", "https_proxy=http://p.invalid", "all_proxy=socks5://s.invalid"] {
        assert!(has(&env, v), "{v} in {env:?}");
    }
    assert!(history(&one).iter().all(|h| !h.contains("invalid") && !h.contains("no_proxy")), "{:?}", history(&one));
    // Declared with ARG, a proxy is an ordinary build arg: in the key and the history.
    let text = "FROM img\nARG HTTP_PROXY\nRUN apt-get update\n";
    let one = conv(text, &[("HTTP_PROXY", "http://one.invalid:3128")], &json!({}));
    let two = conv(text, &[("HTTP_PROXY", "http://two.invalid:3128")], &json!({}));
    assert_ne!(key(&one), key(&two));
    assert!(runs(&one)[0].proxy_env.is_empty());
    assert_eq!(history(&one)[1], "RUN |1 HTTP_PROXY=http://one.invalid:3128 /bin/sh -c apt-get update # buildkit");
}

#[test]
fn workdir_creates_its_directory_for_the_current_user() {
    let c = conv("FROM img\nWORKDIR /a\nUSER app\nWORKDIR sub\n", &[], &json!({}));
    let w = copies(&c);
    assert_eq!((w[0].dest.as_str(), w[0].chown.as_deref()), ("/a", None));
    assert_eq!((w[1].dest.as_str(), w[1].chown.as_deref()), ("/a/sub", Some("app")));
    let c = conv("FROM img\nWORKDIR /w\nRUN id\n", &[], &json!({ "config": { "User": "1000:1000" } }));
    assert_eq!(copies(&c)[0].chown.as_deref(), Some("1000:1000"), "the base's USER counts");
    assert_eq!(runs(&c)[0].user.as_deref(), Some("1000:1000"));
}

#[test]
fn an_unknown_target_and_an_empty_shell_are_dockerfile_errors_with_a_place() {
    let (c, _) = convert_with("FROM img AS a\nRUN x\nFROM img AS b\n", Some("nosuch"), &[], &json!({}));
    let err = c.err().unwrap();
    assert_eq!(err.kind(), crate::ErrorKind::InvalidInput);
    let text = err.to_string();
    assert!(text.starts_with("Dockerfile:3:1: target stage \"nosuch\" could not be found"), "{text}");
    assert!(text.contains("FROM img AS b"), "the line is shown: {text}");
    // The parser refuses `SHELL []`; the converter refuses an empty SHELL however it comes.
    let err = crate::dockerfile::parse("Dockerfile", "FROM img\nSHELL []\n").err().unwrap().to_string();
    assert!(err.starts_with("Dockerfile:2:1: ") && err.contains("SHELL"), "{err}");
    let mut df = crate::dockerfile::parse("Dockerfile", "FROM img\nSHELL [\"sh\"]\nRUN x\n").unwrap();
    df.stages[0].instructions[0].kind = Kind::Shell(vec![]);
    let build_args = BTreeMap::new();
    let resolve = |_: &str, _: &oci::Platform| Ok(base(&json!({})));
    let inputs = Inputs {
        build_args: &build_args,
        target_platforms: vec!["linux/amd64".parse().unwrap()],
        no_cache: false,
        no_cache_filter: &[],
        host_network: true,
        allow_insecure: false,
        extra_hosts: &[],
        resolve: &resolve,
        named: &BTreeMap::new(),
    };
    let text = convert(&df, None, &inputs).err().unwrap().to_string();
    assert!(text.starts_with("Dockerfile:2:1: SHELL needs at least one argument"), "{text}");
}

#[test]
fn paths_join_like_workdir() {
    assert_eq!(join_path("/", "app"), "/app");
    assert_eq!(join_path("/app", "src/"), "/app/src");
    assert_eq!(join_path("/app", "/opt"), "/opt");
    assert_eq!(join_path("/app", "../x/./y"), "/x/y");
}

#[test]
fn expose_normalises_ports() {
    use super::dispatch::expose_ports;
    assert_eq!(expose_ports("80").unwrap(), ["80/tcp"]);
    assert_eq!(expose_ports("53/UDP").unwrap(), ["53/udp"]);
    assert_eq!(expose_ports("8000-8002").unwrap(), ["8000/tcp", "8001/tcp", "8002/tcp"]);
    assert!(expose_ports("http").is_err());
}

/// `text` converted for `platforms`, each platform's base image its own manifest, as in a
/// real index.
fn convert_for(text: &str, platforms: &[oci::Platform]) -> Converted {
    let df = crate::dockerfile::parse("Dockerfile", text).unwrap();
    let build_args = BTreeMap::new();
    let resolve = |_: &str, p: &oci::Platform| {
        Ok(BaseImage { manifest: oci::Digest::of(p.to_string().as_bytes()), ..base(&json!({})) })
    };
    let inputs = Inputs {
        build_args: &build_args,
        target_platforms: platforms.to_vec(),
        no_cache: false,
        no_cache_filter: &[],
        host_network: true,
        allow_insecure: false,
        extra_hosts: &[],
        resolve: &resolve,
        named: &BTreeMap::new(),
    };
    convert(&df, None, &inputs).unwrap()
}

#[test]
fn several_platforms_share_one_graph_and_each_step_that_does_not_depend_on_the_platform() {
    let platforms: Vec<oci::Platform> = ["linux/amd64", "linux/arm64"].iter().map(|p| p.parse().unwrap()).collect();
    let c = convert_for(
        "FROM --platform=$BUILDPLATFORM img AS build\nRUN make all\nFROM img\nARG TARGETARCH\n\
         COPY --from=build /out/$TARGETARCH /app\nRUN uname -m\n",
        &platforms,
    );
    assert_eq!(c.images.iter().map(|i| i.platform.clone()).collect::<Vec<_>>(), platforms);
    let makes = runs(&c).iter().filter(|r| r.args.iter().any(|a| a.contains("make all"))).count();
    assert_eq!(makes, 1, "the build stage runs on the host's platform for both targets: one vertex");
    let unames: Vec<&str> = runs(&c).iter().map(|r| r.platform.as_str()).skip(1).collect();
    assert_eq!(unames, ["linux/amd64", "linux/arm64"], "the final stage's RUN once per platform");
    let (a, b) = (c.images[0].stage().vertex, c.images[1].stage().vertex);
    assert_ne!(a, b, "each platform has its own image");
    let host = oci::Platform::host();
    let names = names(&c);
    assert!(names.contains(&format!("[{host} build 2/2] RUN make all").as_str()), "{names:?}");
    assert!(names.contains(&"[linux/arm64 stage-1 3/3] RUN uname -m"), "{names:?}");
}

#[test]
fn a_stage_pinned_to_another_platform_names_the_target_it_runs_for_as_buildkit_does() {
    let platforms: Vec<oci::Platform> =
        ["linux/amd64", "linux/arm64", "linux/arm/v7"].iter().map(|p| p.parse().unwrap()).collect();
    let c = convert_for(
        "FROM --platform=linux/amd64 img AS fixed\nARG TARGETARCH\nRUN echo $TARGETARCH > /arch\n\
         FROM img\nCOPY --from=fixed /arch /arch\n",
        &platforms,
    );
    let names = names(&c);
    for want in [
        "[linux/amd64 fixed 2/2] RUN echo $TARGETARCH > /arch",
        "[linux/amd64->arm64 fixed 2/2] RUN echo $TARGETARCH > /arch",
        "[linux/amd64->arm/v7 fixed 2/2] RUN echo $TARGETARCH > /arch",
    ] {
        assert!(names.contains(&want), "{want} not in {names:?}");
    }
}

#[test]
fn steps_are_one_vertex_only_when_they_would_do_the_same() {
    let text = "FROM img AS a\nRUN --mount=type=secret,id=prod,env=T deploy\nFROM img AS b\n\
                RUN --mount=type=secret,id=staging,env=T deploy\nFROM img AS c\n\
                RUN --mount=type=secret,id=prod,env=T deploy\nFROM img\nCOPY --from=a /x /a\n\
                COPY --from=b /x /b\nCOPY --from=c /x /c\n";
    let c = conv(text, &[], &json!({}));
    // The secret's id is not in the cache key (the secret's value is not either), but it
    // changes what the step runs with: a and b stay two steps; c is a's.
    assert_eq!(runs(&c).len(), 2, "{:?}", names(&c));
}

#[test]
fn stopsignal_must_be_a_signal_and_volume_needs_a_path() {
    let err = |text: &str| convert_with(text, None, &[], &json!({})).0.err().map(|e| e.to_string()).unwrap_or_default();
    let bad = err("FROM img\nSTOPSIGNAL NOTASIG\n");
    assert!(bad.contains("Dockerfile:2:12") && bad.contains("invalid signal"), "{bad}");
    for ok in ["SIGTERM", "term", "9", "SIGKILL"] {
        let c = conv(&format!("FROM img\nSTOPSIGNAL {ok}\n"), &[], &json!({}));
        assert_eq!(config(&c)["StopSignal"], json!(ok), "{ok}");
    }
    let c = conv("FROM img\nARG SIG=SIGQUIT\nSTOPSIGNAL $SIG\n", &[], &json!({}));
    assert_eq!(config(&c)["StopSignal"], json!("SIGQUIT"), "checked after expansion");
    let empty = err("FROM img\nVOLUME []\n");
    assert!(empty.contains("Dockerfile:2") && empty.contains("VOLUME requires at least one argument"), "{empty}");
}

#[test]
fn a_stage_built_from_another_inherits_its_args() {
    let text = "FROM img AS base\nARG VERSION=1.0\nARG FROMCLI\nFROM base AS mid\n\
                WORKDIR /opt/app-$VERSION\nRUN echo $VERSION $FROMCLI\nFROM mid AS fin\nRUN echo final $VERSION\n\
                FROM img\nRUN echo other [$VERSION]\n";
    let c = convert_with(text, Some("mid"), &[("FROMCLI", "cli")], &json!({})).0.unwrap();
    assert_eq!(copies(&c)[0].dest, "/opt/app-1.0");
    let env = runs(&c)[0].process_env();
    assert!(has(&env, "VERSION=1.0") && has(&env, "FROMCLI=cli"), "{env:?}");
    let c = convert_with(text, Some("fin"), &[], &json!({})).0.unwrap();
    assert!(has(&runs(&c)[1].process_env(), "VERSION=1.0"), "two stages down");
    let c = conv(text, &[], &json!({}));
    assert!(!runs(&c)[0].process_env().iter().any(|e| e.starts_with("VERSION=")), "not in a stage FROM an image");
}
