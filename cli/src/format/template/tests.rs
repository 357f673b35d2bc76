//! The templates docker users write, with what Go's text/template prints for them (checked
//! against Go 1.19's text/template over the same JSON decoded into maps; where docker runs
//! templates over its typed structs instead, as for `index` of a missing label, docker's
//! output is the reference).

use super::{ListFormat, Template};
use serde_json::json;

fn data() -> serde_json::Value {
    json!({
        "Name": "/web",
        "State": {"Status": "running", "Running": true, "Pid": 7, "Health": null, "ExitCode": 0},
        "Config": {"Env": ["PATH=/bin", "A=b c"], "Labels": {"com.x.role": "db", "tier": "back"},
                   "Cmd": ["nginx", "-g", "daemon off;"], "Empty": []},
        "NetworkSettings": {"Networks": {"bridge": {"IPAddress": "10.0.0.2"}, "app": {"IPAddress": "10.1.0.3"}}},
        "Mounts": [{"Source": "/a", "Destination": "/data"}, {"Source": "/b", "Destination": "/logs"}],
        "Size": 1.5,
    })
}

fn render(tpl: &str) -> String {
    Template::parse(tpl).unwrap().render(&data()).unwrap()
}

fn error(tpl: &str) -> String {
    match Template::parse(tpl) {
        Err(e) => format!("{e:#}"),
        Ok(t) => format!("{:#}", t.render(&data()).unwrap_err()),
    }
}

#[test]
fn fields_print_as_go_prints_them() {
    assert_eq!(render("{{.State.Status}} {{.State.Pid}} {{.State.Running}}"), "running 7 true");
    assert_eq!(render("{{.Config.Env}}"), "[PATH=/bin A=b c]");
    assert_eq!(render("{{.Config.Labels}}"), "map[com.x.role:db tier:back]");
    assert_eq!(render("{{.State.Health}}|{{.Missing}}|{{.Missing.Deeper}}"), "<no value>|<no value>|<no value>");
    assert_eq!(render("{{print .State.Health}} {{json .State.Health}}"), "<nil> null");
    assert_eq!(render("{{.Size}}"), "1.5");
    assert_eq!(render(r"{{.Name}}\t{{.State.Pid}}"), "/web\t7");
    assert_eq!(render("{{json .Config.Cmd}} {{json .State.Health}}"), r#"["nginx","-g","daemon off;"] null"#);
    assert_eq!(render("{{$.Name}} {{.}}").split(' ').next(), Some("/web"));
}

#[test]
fn range_walks_lists_and_maps_in_key_order() {
    let ips = "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}";
    assert_eq!(render(ips), "10.1.0.3 10.0.0.2 ", "map values in key order: app, bridge");
    assert_eq!(render("{{range $k, $v := .Config.Labels}}{{$k}}={{$v}};{{end}}"), "com.x.role=db;tier=back;");
    assert_eq!(
        render("{{range $i, $m := .Mounts}}{{$i}}:{{$m.Source}}->{{.Destination}} {{end}}"),
        "0:/a->/data 1:/b->/logs "
    );
    assert_eq!(render("{{range .Config.Empty}}x{{else}}none{{end}}"), "none");
    assert_eq!(render("{{range .Missing}}x{{end}}"), "");
    assert_eq!(render("{{range .Mounts}}{{$.Name}}{{end}}"), "/web/web", "$ is the data inside range");
}

#[test]
fn if_with_and_else_choose_branches() {
    assert_eq!(render("{{if .State.Running}}up{{else}}down{{end}}"), "up");
    assert_eq!(render("{{if .State.Health}}{{.State.Health.Status}}{{else}}no check{{end}}"), "no check");
    assert_eq!(render("{{if .State.ExitCode}}a{{else if .Config.Env}}b{{else}}c{{end}}"), "b");
    assert_eq!(render("{{with .State}}{{.Status}}{{end}}{{with .Missing}}x{{else}}-{{end}}"), "running-");
    assert_eq!(render(r#"{{if eq .State.Status "exited" "running"}}y{{end}}"#), "y");
    assert_eq!(render("{{if and .State.Running (not .State.ExitCode)}}ok{{end}}"), "ok");
    assert_eq!(render("{{if or .Missing .Name}}{{or .Missing .Name}}{{end}}"), "/web");
    assert_eq!(render("{{if gt .State.Pid 5}}big{{end}}{{if lt (len .Mounts) 3}} few{{end}}"), "big few");
}

#[test]
fn functions_of_go_and_docker() {
    assert_eq!(render(r#"{{index .Config.Labels "com.x.role"}}|{{index .Config.Labels "nope"}}|"#), "db||");
    assert_eq!(render("{{index .Config.Cmd 1}} {{len .Config.Env}}"), "-g 2");
    assert_eq!(render(r#"{{join .Config.Cmd " "}}"#), "nginx -g daemon off;");
    assert_eq!(render(r#"{{range split "a,b" ","}}[{{.}}]{{end}}"#), "[a][b]");
    assert_eq!(render("{{upper .State.Status}} {{lower \"AB\"}} {{title \"ab cd\"}}"), "RUNNING ab Ab Cd");
    assert_eq!(render("{{truncate .Name 2}}|{{pad .Name 1 2}}|"), "/w| /web  |");
    assert_eq!(
        render(r#"{{printf "%-6s|%3d|%q|%v" .State.Status .State.Pid .Name .State.Running}}"#),
        "running|  7|\"/web\"|true"
    );
    assert_eq!(render(r#"{{printf "%05d" .State.Pid}}"#), "00007");
    assert_eq!(render("{{.Name | printf \"%s!\"}} {{print 1 2 \"a\" \"b\"}}"), "/web! 1 2ab");
    assert_eq!(render("{{println .Name}}"), "/web\n");
    assert_eq!(render("{{$n := .State.Pid}}{{$n}}{{$n = 8}}{{$n}}"), "78");
}

#[test]
fn trim_markers_and_comments() {
    assert_eq!(render("a  {{- .Name -}}  b"), "a/webb");
    assert_eq!(render("a {{/* a comment */}}b"), "a b");
    assert_eq!(render("{{range .Mounts -}}\n  {{.Source}}\n{{- end}}"), "/a/b");
    assert_eq!(render(r#"{{"}}"}}"#), "}}");
}

#[test]
fn mistakes_are_errors_with_a_position() {
    assert!(error("{{.State").contains("1:1: unclosed action"), "{}", error("{{.State"));
    assert!(error("x\n {{if .Name}}y").contains("2:2: {{if}} has no {{end}}"), "{}", error("x\n {{if .Name}}y"));
    assert!(error("{{end}}").contains("unexpected {{end}}"));
    assert!(error("{{nosuch .Name}}").contains("function \"nosuch\" not defined"));
    assert!(error("{{.State.Health.Status}}").contains("nil pointer evaluating .Status"));
    assert!(error("{{.Name.First}}").contains("can't evaluate field First"));
    assert!(error("{{index .Config.Cmd 9}}").contains("index out of range: 9"));
    assert!(error(r#"{{eq .State.Pid "7"}}"#).contains("incompatible types"));
    assert!(error("{{$nope}}").contains("undefined variable $nope"));
    assert!(error("{{.Name .State}}").contains("non-function"));
    assert!(error("{{template \"x\"}}").contains("not supported"));
}

#[test]
fn table_formats_align_columns_under_docker_titles() {
    let rows = [
        json!({"Repository": "app", "Tag": "latest", "ID": "0123456789ab"}),
        json!({"Repository": "registry.example/team/longer-name", "Tag": "v1", "ID": "ba9876543210"}),
    ];
    let headers = [("Repository", "REPOSITORY"), ("Tag", "TAG"), ("ID", "IMAGE ID")];
    let table = ListFormat::parse(r"table {{.Repository}}\t{{.ID}}").unwrap();
    assert_eq!(
        table.render(&headers, &rows).unwrap(),
        "REPOSITORY                          IMAGE ID\n\
         app                                 0123456789ab\n\
         registry.example/team/longer-name   ba9876543210\n"
    );
    let lines = ListFormat::parse("{{.Repository}}:{{.Tag}}").unwrap();
    assert_eq!(lines.render(&headers, &rows).unwrap(), "app:latest\nregistry.example/team/longer-name:v1\n");
    assert!(matches!(ListFormat::parse(" table ").unwrap(), ListFormat::Default));
    assert_eq!(ListFormat::parse("json").unwrap().render(&headers, &rows[..1]).unwrap(), format!("{}\n", rows[0]));
}

#[test]
fn label_is_the_method_of_dockers_list_rows() {
    let row = json!({"Names": "web", "Labels": "team=ci,tier=back"});
    let t = Template::parse(r#"{{.Label "team"}}|{{.Label "nope"}}|{{"tier" | .Label}}"#).unwrap();
    assert_eq!(t.render_row(&row).unwrap(), "ci||back");
    // Over a map of labels as well (inspect's Config), one argument only.
    let t = Template::parse(r#"{{.Config.Label "tier"}}"#).unwrap();
    assert_eq!(t.render(&data()).unwrap(), "back");
    assert!(error(r#"{{.Label "a" "b"}}"#).contains("wrong number of args for Label"));
    assert!(error(r#"{{.Label "a"}}"#).contains("can't evaluate field Label"), "the object has no Labels");
}
