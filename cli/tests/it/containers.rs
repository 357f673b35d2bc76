//! Detached containers (issue 16): `run -d` under a supervisor, published ports, health
//! checks and `--wait`, `ps`, `logs`, `exec`, `stop`, `kill`, `wait`, `start`, `rm -f`,
//! `inspect`, and what a killed supervisor leaves behind.

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::util::{container_store as setup, p, Berth, Outside};

/// A service image: busybox httpd serving "hello", with EXPOSE and a HEALTHCHECK that
/// probes every 50 ms during its start period; it exits 0 on SIGTERM.
fn service_image(b: &Berth) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        "FROM busybox\n\
         RUN mkdir /www && echo hello > /www/index.html\n\
         EXPOSE 8080\n\
         HEALTHCHECK --interval=30s --start-period=20s --start-interval=50ms --timeout=2s \\\n\
           CMD wget -q -O /dev/null http://127.0.0.1:8080/ || exit 1\n\
         CMD [\"sh\", \"-c\", \"echo serving; echo to-stderr >&2; trap 'echo bye; exit 0' TERM; httpd -f -p 8080 -h /www & wait\"]\n",
    )
    .unwrap();
    b.ok(&["build", "-q", "-t", "svc", &p(dir.path())]);
}

fn get(port: u16) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to the published port");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn inspect(b: &Berth, what: &str, format: &str) -> String {
    b.ok(&["inspect", "--format", format, what]).trim().to_owned()
}

fn state_json(b: &Berth, id: &str) -> serde_json::Value {
    let path = b.root.path().join("containers").join(id).join("state.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn a_detached_service_is_published_healthy_logged_stopped_and_removed() {
    let Some(b) = setup() else { return };
    service_image(&b);
    let started = Instant::now();
    let id = b.ok(&["run", "-d", "--wait", "--name", "web", "-p", "127.0.0.1::8080", "svc"]).trim().to_owned();
    eprintln!("run -d --wait: {:?}", started.elapsed());
    assert_eq!(id.len(), 64, "{id}");
    // --wait returned: the image's own health check has passed.
    assert_eq!(inspect(&b, "web", "{{.State.Health.Status}}"), "healthy");
    let ports: serde_json::Value =
        serde_json::from_str(&inspect(&b, "web", "{{json .NetworkSettings.Ports}}")).unwrap();
    let port: u16 = ports["8080/tcp"][0]["HostPort"].as_str().unwrap().parse().unwrap();
    assert_eq!(ports["8080/tcp"][0]["HostIp"], "127.0.0.1");
    let reply = get(port);
    assert!(reply.starts_with("HTTP/1.") && reply.ends_with("hello\n"), "{reply}");
    let ps = b.ok(&["ps"]);
    assert!(ps.contains(&id[..12]) && ps.contains("(healthy)"), "{ps}");
    assert!(ps.contains(&format!("127.0.0.1:{port}->8080/tcp")) && ps.contains("web"), "{ps}");
    // -P publishes the image's EXPOSEd port on a port of the kernel's choosing.
    b.ok(&["run", "-d", "--name", "web2", "-P", "--no-healthcheck", "svc"]);
    let ports: serde_json::Value =
        serde_json::from_str(&inspect(&b, "web2", "{{json .NetworkSettings.Ports}}")).unwrap();
    let port2: u16 = ports["8080/tcp"][0]["HostPort"].as_str().unwrap().parse().unwrap();
    assert_ne!(port2, port);
    assert_eq!(inspect(&b, "web2", "{{json .State.Health}}"), "null", "--no-healthcheck turns the image's off");
    // Logs: stdout to stdout, stderr to stderr; --tail; --timestamps.
    let out = b.output(&["logs", "web"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "serving\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "to-stderr\n");
    let stamped = b.ok(&["logs", "-t", "web"]);
    let (time, line) = stamped.trim_end().split_once(' ').unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(time).is_ok() && line == "serving", "{stamped}");
    // stop: the image's handler runs (exit 0, not 137), the port closes, the log has "bye".
    let t = Instant::now();
    assert_eq!(b.ok(&["stop", "web"]).trim(), "web");
    assert!(t.elapsed() < Duration::from_secs(5), "stop waited for its timeout: {:?}", t.elapsed());
    assert_eq!(b.ok(&["wait", "web"]).trim(), "0");
    assert_eq!(inspect(&b, "web", "{{.State.Status}} {{.State.ExitCode}}"), "exited 0");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "the published port is closed");
    assert_eq!(b.ok(&["logs", "--tail", "1", "web"]), "bye\n");
    let all = b.ok(&["logs", "web"]);
    assert_eq!(b.ok(&["logs", "--tail", "-1", "web"]), all, "a negative --tail is all of it, as docker's");
    assert_eq!(b.ok(&["logs", "-n", "-1", "web"]), all);
    let ps = b.ok(&["ps", "-a"]);
    assert!(ps.contains("Exited (0)"), "{ps}");
    assert!(!b.ok(&["ps"]).contains("web\n"), "ps without -a lists running containers only");
    b.ok(&["rm", "web"]);
    let err = b.fails(&["logs", "web"]);
    assert!(err.contains("no such container: web"), "{err}");
    assert!(!b.root.path().join("containers").join(&id).exists());
}

#[test]
fn wait_fails_with_the_last_health_output_and_log_lines() {
    let Some(b) = setup() else { return };
    let health = ["--health-cmd", "echo probe-says-no; exit 1", "--health-interval", "50ms", "--health-retries", "2"];
    let mut args = vec!["run", "-d", "--wait", "--name", "sick"];
    args.extend(health);
    args.extend(["busybox", "sh", "-c", "echo app-log-line; sleep 30"]);
    let out = b.output(&args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("container sick is unhealthy"), "{err}");
    assert!(err.contains("probe-says-no") && err.contains("app-log-line"), "{err}");
    assert_eq!(inspect(&b, "sick", "{{.State.Health.Status}} {{.State.Health.FailingStreak}}"), "unhealthy 2");
    // A container that exits before it is healthy.
    let mut args = vec!["run", "-d", "--wait", "--name", "dies"];
    args.extend(health);
    args.extend(["busybox", "sh", "-c", "echo dying; exit 3"]);
    let out = b.output(&args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("exited with code 3") && err.contains("dying"), "{err}");
    // No verdict in time.
    let out = b.output(&[
        "run",
        "-d",
        "--wait",
        "--wait-timeout",
        "300ms",
        "--name",
        "slow",
        "--health-cmd",
        "true",
        "--health-interval",
        "1h",
        "busybox",
        "sleep",
        "30",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("did not become healthy within 0.3s"), "{err}");
    // Without a health check, --wait returns once the process runs.
    b.ok(&["run", "-d", "--wait", "--name", "plain", "busybox", "sleep", "30"]);
    assert_eq!(inspect(&b, "plain", "{{.State.Status}}"), "running");
    // --wait-timeout alone, or one that does not parse, is refused before anything is made
    // (it was ignored, and a bad one found only once the container ran).
    for (args, why) in [
        (&["-d", "--wait-timeout", "5s"][..], "add --wait"),
        (&["-d", "--wait", "--wait-timeout", "soon"], "invalid --wait-timeout"),
    ] {
        let full = [&["run", "--name", "never"][..], args, &["busybox", "true"]].concat();
        let out = b.output(&full);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.code() == Some(125) && err.contains(why), "{args:?}: {err}");
    }
    assert!(b.output(&["inspect", "never"]).status.code() != Some(0), "no container was made");
    // Health flags on a foreground run: said to be ignored, not silently dropped.
    let out = b.output(&["run", "--rm", "--health-cmd", "true", "busybox", "true"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.contains("health checks run for detached containers"), "{err}");
}

#[test]
fn exec_joins_the_containers_namespaces_cgroup_and_confinement() {
    let Some(b) = setup() else { return };
    b.ok(&[
        "run",
        "-d",
        "--name",
        "box",
        "--hostname",
        "boxhost",
        "--memory",
        "64m",
        "--ulimit",
        "nofile=123",
        "busybox",
        "sh",
        "-c",
        "echo made-by-pid1 > /tmp/marker; sleep 60",
    ]);
    let pid1 = |what: &str| b.ok(&["exec", "box", "cat", &format!("/proc/1/{what}")]);
    let own = |what: &str| b.ok(&["exec", "box", "cat", &format!("/proc/self/{what}")]);
    // The same PID namespace (PID 1 is the container's sh), mount namespace, hostname.
    // (busybox's sh execs the script's last command: PID 1 is the sleep.)
    assert_eq!(pid1("cmdline"), "sleep\x0060\0");
    assert_eq!(b.ok(&["exec", "box", "cat", "/tmp/marker"]), "made-by-pid1\n");
    assert_eq!(b.ok(&["exec", "box", "hostname"]), "boxhost\n");
    // docker's --env-file, then -e over it.
    let dir = tempfile::tempdir().unwrap();
    let envf = dir.path().join("env");
    std::fs::write(&envf, "# settings\nMODE=file\nLEVEL=3\n").unwrap();
    let envf = p(&envf);
    let shown = b.ok(&["exec", "--env-file", &envf, "-e", "MODE=flag", "box", "sh", "-c", "echo $MODE $LEVEL"]);
    assert_eq!(shown, "flag 3\n");
    // The same cgroups, capabilities and seccomp filter as the container's own process.
    assert_eq!(own("cgroup"), pid1("cgroup"));
    let caps = |s: &str| {
        s.lines().filter(|l| l.starts_with("Cap") || l.starts_with("Seccomp:")).collect::<Vec<_>>().join("\n")
    };
    assert_eq!(caps(&own("status")), caps(&pid1("status")));
    assert!(caps(&own("status")).contains("Seccomp:\t2"), "{}", own("status"));
    let id = inspect(&b, "box", "{{.Id}}");
    let in_cgroup = ["memory", "unified"]
        .iter()
        .map(|c| Path::new("/sys/fs/cgroup").join(c).join("berth").join(&id))
        .chain([Path::new("/sys/fs/cgroup/berth").join(&id)])
        .find(|d| d.is_dir())
        .expect("the container's memory cgroup");
    let procs = std::fs::read_to_string(in_cgroup.join("cgroup.procs")).unwrap();
    assert!(procs.lines().any(|l| l == inspect(&b, "box", "{{.State.Pid}}")), "{procs}");
    // -u, -w, -e and the exit code.
    let out = b.output(&[
        "exec",
        "-u",
        "nobody",
        "-w",
        "/tmp",
        "-e",
        "MODE=ci",
        "box",
        "sh",
        "-c",
        "id -u; pwd; echo $MODE; exit 4",
    ]);
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "65534\n/tmp\nci\n");
    // The container's rlimits, and docker's 127 for a program that is not there.
    assert_eq!(b.ok(&["exec", "box", "sh", "-c", "ulimit -n"]), "123\n");
    let out = b.output(&["exec", "box", "/no/such/program"]);
    assert_eq!(out.status.code(), Some(127), "{}", String::from_utf8_lossy(&out.stderr));
    // A -w the container lacks is docker's 126, and is not made (before: made, and 0).
    let out = b.output(&["exec", "-w", "/no/such/dir", "box", "pwd"]);
    assert_eq!(out.status.code(), Some(126), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stderr).contains("enter the working directory"));
    assert_eq!(b.output(&["exec", "box", "ls", "-d", "/no/such/dir"]).status.code(), Some(1));
    b.ok(&["stop", "-t", "0", "box"]);
    let err = b.fails(&["exec", "box", "true"]);
    assert!(err.contains("container box is not running"), "{err}");
    assert!(!in_cgroup.exists(), "the cgroup is removed when the container exits");
}

#[test]
fn a_killed_supervisor_loses_no_exit_status_and_leaves_nothing_behind() {
    let Some(b) = setup() else { return };
    let id = b.ok(&["run", "-d", "--memory", "64m", "-p", "127.0.0.1::9", "busybox", "sleep", "60"]).trim().to_owned();
    let state = state_json(&b, &id);
    let (pid, supervisor) = (state["pid"].as_i64().unwrap(), state["supervisor"].as_i64().unwrap());
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    let port = state["ports"][0]["host_port"].as_u64().unwrap() as u16;
    let veth = Path::new("/sys/class/net").join(state["veth"].as_str().unwrap());
    assert!(veth.exists(), "on the bridge, the default network");
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(supervisor as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "the container dies with its supervisor");
    // The next command records the exit and removes the cgroup.
    let ps = b.ok(&["ps", "-a"]);
    assert!(ps.contains("Exited (137)"), "{ps}");
    assert!(inspect(&b, &id, "{{.State.Error}}").contains("supervisor died"));
    for c in ["memory", "unified", ""] {
        let d = Path::new("/sys/fs/cgroup").join(c).join("berth").join(&id);
        assert!(!d.exists(), "{} is left", d.display());
    }
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "the proxy died with the supervisor");
    assert!(!veth.exists(), "the veth pair went with the container's namespace");
    b.ok(&["rm", &id[..12]]);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&p(b.root.path())), "a mount is left under the root: {mounts}");
}

#[test]
fn start_kill_and_rm_follow_docker() {
    let Some(b) = setup() else { return };
    // The rootfs is kept between runs: the second run sees the first one's file.
    // The trap comes first: once the count is in the logs, USR1 is caught, not fatal.
    let script = "trap 'echo got-usr1' USR1; echo run >> /runs; wc -l < /runs; while :; do sleep 0.05; done";
    b.ok(&["run", "-d", "--name", "s", "busybox", "sh", "-c", script]);
    let err = b.fails(&["rm", "s"]);
    assert!(err.contains("is running"), "{err}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while b.ok(&["logs", "s"]).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    b.ok(&["kill", "-s", "USR1", "s"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !b.ok(&["logs", "s"]).contains("got-usr1") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(b.ok(&["logs", "s"]), "1\ngot-usr1\n");
    b.ok(&["kill", "s"]);
    assert_eq!(b.ok(&["wait", "s"]).trim(), "137");
    b.ok(&["start", "s"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !b.ok(&["logs", "s"]).contains("2\n") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(b.ok(&["logs", "s"]), "1\ngot-usr1\n2\n");
    let err = b.fails(&["run", "-d", "--name", "s", "busybox", "true"]);
    assert!(err.contains("already in use"), "{err}");
    assert_eq!(b.ok(&["rm", "-f", "s"]).trim(), "s");
    assert_eq!(b.ok(&["ps", "-aq"]), "");
    // --rm: a detached container removes itself when it exits.
    let id = b.ok(&["run", "-d", "--rm", "busybox", "true"]).trim().to_owned();
    let deadline = Instant::now() + Duration::from_secs(5);
    while b.root.path().join("containers").join(&id).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!b.root.path().join("containers").join(&id).exists(), "--rm removed it");
}

/// A UDP echo server for the container (busybox's nc has no UDP): replies `echo:` and the
/// datagram, so a test sees both directions through the published port.
const UDP_ECHO: &str = r#"
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
int main(void) {
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(5353)};
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) < 0) return 1;
    for (;;) {
        char buf[512] = "echo:";
        struct sockaddr_in from;
        socklen_t len = sizeof from;
        ssize_t n = recvfrom(s, buf + 5, sizeof buf - 5, 0, (struct sockaddr *)&from, &len);
        if (n > 0) sendto(s, buf, n + 5, 0, (struct sockaddr *)&from, len);
    }
}
"#;

#[test]
fn udp_ports_are_published_too() {
    let Some(b) = setup() else { return };
    if !crate::util::require_tool("cc") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("echo.c"), UDP_ECHO).unwrap();
    let bin = dir.path().join("echo");
    let out = std::process::Command::new("cc")
        .args(["-static", "-O2", "-o", &p(&bin), &p(&dir.path().join("echo.c"))])
        .output()
        .unwrap();
    assert!(out.status.success(), "cc: {}", String::from_utf8_lossy(&out.stderr));
    let volume = format!("{}:/echo:ro", p(&bin));
    b.ok(&["run", "-d", "--name", "u", "-v", &volume, "-p", "127.0.0.1::5353/udp", "busybox", "/echo"]);
    let state = state_json(&b, &inspect(&b, "u", "{{.Id}}"));
    let port = state["ports"][0]["host_port"].as_u64().unwrap() as u16;
    assert_eq!(state["ports"][0]["proto"], "udp");
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut buf = [0u8; 512];
    let deadline = Instant::now() + Duration::from_secs(5);
    let reply = loop {
        // The server may not be bound yet: send again until it answers.
        sock.send_to(b"datagram", ("127.0.0.1", port)).unwrap();
        if let Ok(n) = sock.recv(&mut buf) {
            break String::from_utf8_lossy(&buf[..n]).into_owned();
        }
        assert!(Instant::now() < deadline, "no reply through the published UDP port");
    };
    assert_eq!(reply, "echo:datagram");
}

#[test]
fn a_service_without_a_network_that_ends_at_once_keeps_its_exit_code() {
    let Some(b) = setup() else { return };
    // Before, the supervisor opened the network namespace to forward -p after the process
    // could be gone: `run -d` failed (125) and the container showed 137 where it ended 3.
    for i in 0..10 {
        let name = format!("quick{i}");
        let out = b.output(&[
            "run",
            "-d",
            "--network",
            "none",
            "-p",
            "127.0.0.1::80",
            "--name",
            &name,
            "busybox",
            "sh",
            "-c",
            "exit 3",
        ]);
        assert!(out.status.success(), "{i}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(b.ok(&["wait", &name]).trim(), "3", "{i}");
        b.ok(&["rm", &name]);
    }
}

#[test]
fn bad_flags_are_refused_before_anything_is_made() {
    let Some(b) = setup() else { return };
    // A foreground run publishes too (it needed -d before).
    assert_eq!(b.ok(&["run", "--rm", "-p", "127.0.0.1::80", "busybox", "echo", "ran"]), "ran\n");
    let out = b.output(&["run", "-d", "-p", "80/sctp", "busybox", "true"]);
    assert_eq!(out.status.code(), Some(125), "a usage error of run: docker's 125");
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown protocol"));
    let err = b.fails(&["run", "-d", "--stop-signal", "SIGNOPE", "busybox", "true"]);
    assert!(err.contains("invalid signal"), "{err}");
    // A port already taken: the run fails with the address, and nothing is left running.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let err =
        b.fails(&["run", "-d", "--name", "clash", "-p", &format!("127.0.0.1:{port}:80"), "busybox", "sleep", "30"]);
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert_eq!(inspect(&b, "clash", "{{.State.Status}}"), "exited");
    assert_eq!(b.ok(&["ps", "-q"]), "");
    assert_eq!(err.matches("Address already in use").count(), 1, "said once: {err}");
    // A program that is not there: docker's 127, the reason on the one line and in the state.
    let out = b.output(&["run", "-d", "--name", "nf", "busybox", "/nonexistent"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(127), "{err}");
    assert!(err.contains("/nonexistent: No such file or directory") && err.lines().count() == 1, "{err}");
    assert_eq!(b.ok(&["wait", "nf"]).trim(), "127");
    assert!(inspect(&b, "nf", "{{.State.Error}}").contains("No such file"));
    // The host's network: -p is discarded (with a warning), nothing listens.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let spec = format!("127.0.0.1:{port}:80");
    b.ok(&["run", "-d", "--name", "h", "--network", "host", "-p", &spec, "busybox", "sleep", "30"]);
    assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(), "nothing was bound on the host");
    // rm -f carries on past a missing container, as docker's does.
    assert_eq!(b.ok(&["rm", "-f", "missing", "h", "nf"]), "h\nnf\n");
    let err = b.fails(&["rm", "missing"]);
    assert!(err.contains("no such container: missing"), "{err}");
    // rmi: the last name of an image a container uses goes only with -f, as docker's.
    b.ok(&["tag", "busybox", "only:one"]);
    b.ok(&["run", "-d", "--name", "user", "only:one", "sleep", "30"]);
    b.ok(&["rmi", "busybox"]);
    let err = b.fails(&["rmi", "only:one"]);
    assert!(err.contains("must force") && err.contains("is using its referenced image"), "{err}");
    b.ok(&["rm", "-f", "user", "clash"]);
    b.ok(&["rmi", "only:one"]);
}

#[test]
fn containers_on_the_bridge_reach_each_other_and_the_outside_through_nat() {
    let Some(b) = setup() else { return };
    b.ok(&[
        "run",
        "-d",
        "--wait",
        "--name",
        "a",
        "--hostname",
        "a-host",
        "busybox",
        "httpd",
        "-f",
        "-p",
        "8080",
        "-h",
        "/etc",
    ]);
    let ip = inspect(&b, "a", "{{.NetworkSettings.IPAddress}}");
    assert!(ip.starts_with("10.90."), "{ip}");
    assert_eq!(inspect(&b, "a", "{{.NetworkSettings.Gateway}}"), "10.90.0.1");
    // Another container reaches it by its address, through the bridge.
    let deadline = Instant::now() + Duration::from_secs(5);
    let got = loop {
        let out = b.output(&["run", "--rm", "busybox", "wget", "-q", "-O", "-", &format!("http://{ip}:8080/hostname")]);
        if out.status.success() || Instant::now() > deadline {
            break String::from_utf8_lossy(&out.stdout).into_owned();
        }
    };
    assert_eq!(got, "a-host\n");
    // Its own files: its address in /etc/hosts, no loopback name server.
    let hosts = b.ok(&["exec", "a", "cat", "/etc/hosts", "/etc/resolv.conf"]);
    assert!(hosts.contains(&format!("{ip}\ta-host")), "{hosts}");
    assert!(!hosts.contains("nameserver 127."), "{hosts}");
    // Outgoing connections leave with the host's address (masquerade).
    let outside = Outside::make(7);
    let server = outside.serve_once();
    let out = b.ok(&["run", "--rm", "busybox", "nc", "10.91.7.1", "9000"]);
    server.join().unwrap();
    assert_eq!(out, "peer=10.91.7.2\n", "the outside sees the host's address, not the container's");
}

#[test]
fn the_bridge_is_made_in_the_network_namespace_berth_runs_in() {
    let Some(b) = setup() else { return };
    // A private network namespace (and mount namespace, /sys still the host's): the bridge
    // must be made there, though the host's berth0 shows in the inherited /sys/class/net.
    b.ok(&["run", "--rm", "busybox", "true"]);
    let out = std::process::Command::new("unshare")
        .args(["--net", "--mount", "--"])
        .arg(env!("CARGO_BIN_EXE_berth"))
        .args(["run", "--rm", "busybox", "sh", "-c", "ip -4 addr show eth0 | grep -o 'inet 10.90[.0-9]*'"])
        .env("BERTH_ROOT", b.root.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.starts_with("inet 10.90."), "{text}{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn exec_t_gives_a_pty_and_i_attaches_stdin() {
    let Some(b) = setup() else { return };
    b.ok(&["run", "-d", "--name", "tt", "-e", "A=1", "-e", "B=2", "busybox", "sleep", "60"]);
    // docker's exec environment: TERM=xterm after HOSTNAME with -t, `-e` replacing in place.
    // The names in order, and A's value.
    let env = |args: &[&str]| -> Vec<String> {
        let out = b.ok(args).replace('\r', "");
        let name = |l: &str| if l.starts_with("A=") { l.to_owned() } else { l.split('=').next().unwrap().to_owned() };
        out.lines().map(name).collect()
    };
    assert_eq!(env(&["exec", "-t", "tt", "env"]), ["PATH", "HOSTNAME", "TERM", "A=1", "B", "HOME"]);
    assert_eq!(env(&["exec", "-e", "A=3", "-e", "C=4", "tt", "env"]), ["PATH", "HOSTNAME", "A=3", "B", "C", "HOME"]);
    let out = b.output(&["exec", "-t", "tt", "tty"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.starts_with("/dev/pts/") && text.ends_with("\r\n"), "{text:?}");
    assert_eq!(b.output(&["exec", "tt", "tty"]).status.code(), Some(1), "not a tty without -t");
    let feed = |args: &[&str]| {
        let mut child =
            b.cmd(args).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(b"hello from stdin\n").unwrap();
        let out = child.wait_with_output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    assert_eq!(feed(&["exec", "-i", "tt", "cat"]), (Some(0), "hello from stdin\n".to_owned()));
    assert_eq!(feed(&["exec", "tt", "cat"]), (Some(0), String::new()), "stdin is empty without -i");
    let read_line = ["exec", "-it", "tt", "sh", "-c", "read line; echo got $line; exit 5"];
    let (code, out) = crate::util::with_terminal_stdin(&b, &read_line, b"hello from stdin\n");
    assert_eq!(code, Some(5));
    assert!(out.contains("got hello from stdin"), "{out:?}");
    // As docker: -it with piped stdin fails at once (exit 1); -t alone runs.
    let out = b.cmd(&["exec", "-it", "tt", "cat"]).stdin(std::process::Stdio::piped()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("the input device is not a TTY"));
    let out = b.cmd(&["exec", "-t", "tt", "echo", "ok"]).stdin(std::process::Stdio::piped()).output().unwrap();
    assert_eq!((out.status.code(), String::from_utf8_lossy(&out.stdout).as_ref()), (Some(0), "ok\r\n"));
    let out =
        b.cmd(&["exec", "-it", "no-such-container", "true"]).stdin(std::process::Stdio::piped()).output().unwrap();
    assert!(!String::from_utf8_lossy(&out.stderr).contains("TTY"), "a missing container is reported first");
}

#[test]
fn container_files_are_private_and_the_seccomp_profile_is_kept() {
    use std::os::unix::fs::PermissionsExt;
    let Some(b) = setup() else { return };
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("no-mkdir.json");
    let deny = r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}"#;
    std::fs::write(&profile, deny).unwrap();
    let opt = format!("seccomp={}", p(&profile));
    let id = b
        .ok(&["run", "-d", "--name", "sec", "-e", "TOKEN=s3cret", "--security-opt", &opt, "busybox", "sleep", "60"])
        .trim()
        .to_owned();
    // Its environment and output are root's alone, as docker's.
    let cdir = b.root.path().join("containers");
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&cdir), 0o700);
    assert_eq!(mode(&cdir.join(&id)), 0o700);
    for f in ["config.json", "state.json", "lock"] {
        assert_eq!(mode(&cdir.join(&id).join(f)), 0o600, "{f}");
    }
    // The profile it started with holds for exec, whatever happens to the file afterwards.
    std::fs::write(&profile, r#"{"defaultAction": "SCMP_ACT_ALLOW"}"#).unwrap();
    let out = b.output(&["exec", "sec", "mkdir", "/tmp/x"]);
    assert!(!out.status.success(), "exec ran without the container's filter");
    std::fs::remove_file(&profile).unwrap();
    b.ok(&["stop", "-t", "0", "sec"]);
    b.ok(&["start", "sec"]);
    assert!(!b.output(&["exec", "sec", "mkdir", "/tmp/y"]).status.success());
}

#[test]
fn failed_starts_and_races_leave_nothing_behind() {
    let Some(b) = setup() else { return };
    // A start that fails removes the container's cgroup.
    let out = b.output(&["run", "-d", "--name", "nf", "--memory", "64m", "busybox", "/nonexistent"]);
    assert_eq!(out.status.code(), Some(127));
    let id = inspect(&b, "nf", "{{.Id}}");
    for c in ["memory", "unified", ""] {
        let d = Path::new("/sys/fs/cgroup").join(c).join("berth").join(&id);
        assert!(!d.exists(), "{} is left", d.display());
    }
    // A name is a name: another container's ID prefix is free to take.
    let name = &id[..3];
    b.ok(&["run", "-d", "--name", name, "busybox", "sleep", "30"]);
    assert_eq!(inspect(&b, name, "{{.Name}}"), format!("/{name}"));
    // rm -f of a --rm container races its own removal, and must not fail.
    for _ in 0..5 {
        let id = b.ok(&["run", "-d", "--rm", "busybox", "sleep", "30"]).trim().to_owned();
        b.ok(&["rm", "-f", &id]);
    }
    // A foreground container under runc: exec refuses (its recorded pid is runc's).
    let mut runc = b.cmd(&["run", "--runtime", "runc", "--name", "rx", "busybox", "sleep", "10"]).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !b.ok(&["ps"]).contains(" rx\n") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let err = b.fails(&["exec", "rx", "hostname"]);
    assert!(err.contains("runs under runc"), "{err}");
    let _ = runc.kill();
    let _ = runc.wait();
}

#[test]
fn ps_filters_and_formats_as_docker() {
    let Some(b) = setup() else { return };
    b.ok(&["run", "-d", "--name", "smoke-a", "busybox", "sleep", "30"]);
    assert_eq!(b.output(&["run", "--name", "smoke-b", "busybox", "sh", "-c", "exit 3"]).status.code(), Some(3));
    b.ok(&["run", "-d", "--name", "other", "busybox", "sleep", "30"]);
    let names = |args: &[&str]| {
        let mut full = vec!["ps", "--format", "{{.Names}} {{.State}}"];
        full.extend_from_slice(args);
        b.ok(&full).lines().map(String::from).collect::<Vec<_>>()
    };
    assert_eq!(names(&["--filter", "name=smoke"]), ["smoke-a running"], "ps without -a: running only");
    let mut all = names(&["-a", "--filter", "name=smoke"]);
    all.sort();
    assert_eq!(all, ["smoke-a running", "smoke-b exited"]);
    // A status filter looks at every container; the same key twice is either.
    assert_eq!(names(&["--filter", "status=exited"]), ["smoke-b exited"]);
    assert_eq!(names(&["--filter", "exited=3"]), ["smoke-b exited"]);
    assert_eq!(names(&["-a", "--filter", "status=exited", "--filter", "name=other"]), Vec::<String>::new());
    assert_eq!(
        names(&["-a", "--filter", "status=exited", "--filter", "status=running", "--filter", "name=oth"]),
        ["other running"]
    );
    let json: serde_json::Value =
        serde_json::from_str(b.ok(&["ps", "--format", "json", "-f", "name=other"]).trim()).unwrap();
    assert_eq!((json["Names"].as_str(), json["Image"].as_str()), (Some("other"), Some("busybox")));
    // docker's Go time: `2026-12-06 07:30:44 +0000 UTC`.
    let created = json["CreatedAt"].as_str().unwrap();
    assert!(chrono::DateTime::parse_from_str(created, "%Y-%m-%d %H:%M:%S %z UTC").is_ok(), "{created}");
    // A field a row lacks is an error, as with docker's typed rows.
    let err = b.fails(&["ps", "-a", "--format", "{{.Nope}}"]);
    assert!(err.contains("can't evaluate field Nope"), "{err}");
    let err = b.fails(&["ps", "--filter", "publish=80"]);
    assert!(err.contains("Invalid filter 'publish'"), "{err}");
    // `table TEMPLATE`: docker's titles over aligned columns.
    let table = b.ok(&["ps", "-a", "--filter", "name=smoke", "--format", r"table {{.Names}}\t{{.State}}\t{{.Image}}"]);
    let mut lines: Vec<&str> = table.lines().collect();
    lines[1..].sort();
    assert_eq!(lines, ["NAMES     STATE     IMAGE", "smoke-a   running   busybox", "smoke-b   exited    busybox"]);
    let net = b.ok(&["ps", "-a", "--filter", "name=smoke-a", "--format", "{{.Networks}}|{{.Mounts}}|"]);
    assert_eq!(net, "bridge||\n", "docker's ps fields: the network's name, no mounts");
    let running = "{{if eq .State \"running\"}}{{.Names}}{{end}}";
    assert_eq!(b.ok(&["ps", "-a", "--filter", "name=smoke", "--format", running]).trim(), "smoke-a");
}

#[test]
fn dit_keeps_a_shell_on_a_pty_for_exec_and_logs_what_its_terminal_shows() {
    let Some(b) = setup() else { return };
    // The CI idiom: a shell kept alive in the background, commands run in it with exec.
    b.ok(&["run", "-dit", "--name", "sh", "busybox", "sh"]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(inspect(&b, "sh", "{{.State.Status}} {{.Config.Tty}} {{.Config.OpenStdin}}"), "running true true");
    assert_eq!(b.ok(&["exec", "sh", "echo", "in"]).trim(), "in");
    // -t alone: the command's stdio is a pty of the container's, 24x80, and the log has
    // what the terminal showed (one stream, with the terminal's CRLF).
    b.ok(&["run", "-dt", "--name", "tty", "busybox", "sh", "-c", "tty; stty size; echo err >&2"]);
    assert_eq!(b.ok(&["wait", "tty"]).trim(), "0");
    assert_eq!(b.ok(&["logs", "tty"]), "/dev/pts/0\r\n24 80\r\nerr\r\n");
    b.ok(&["rm", "-f", "sh", "tty"]);
}

#[test]
fn labels_are_set_merged_with_the_images_filtered_on_and_committed() {
    let Some(b) = setup() else { return };
    // The CI clean-up idiom: label a job's containers, then find them all by the label.
    b.ok(&["run", "--name", "j1", "-l", "ci.job=7", "--label", "role", "busybox", "true"]);
    b.ok(&["commit", "j1", "labelled:1"]);
    b.ok(&["run", "--name", "j2", "-l", "ci.job=7", "-l", "role=db", "labelled:1", "true"]);
    b.ok(&["run", "--name", "other", "-l", "ci.job=8", "busybox", "true"]);
    let names = |filters: &[&str]| {
        let mut args = vec!["ps", "-a", "--format", "{{.Names}}"];
        filters.iter().for_each(|f| args.extend(["--filter", f]));
        let mut out: Vec<String> = b.ok(&args).lines().map(String::from).collect();
        out.sort();
        out
    };
    assert_eq!(names(&["label=ci.job=7"]), ["j1", "j2"]);
    assert_eq!(names(&["label=ci.job"]), ["j1", "j2", "other"], "a key alone: any value");
    assert_eq!(names(&["label=ci.job=7", "label=role=db"]), ["j2"], "every label filter must hold");
    assert_eq!(names(&["label=nosuch"]), Vec::<String>::new());
    // The committed image carries the labels; a container of it has them under its own.
    assert_eq!(
        b.ok(&["inspect", "--type", "image", "-f", "{{json .Config.Labels}}", "labelled:1"]).trim(),
        r#"{"ci.job":"7","role":""}"#
    );
    assert_eq!(inspect(&b, "j2", "{{json .Config.Labels}}"), r#"{"ci.job":"7","role":"db"}"#);
    assert_eq!(inspect(&b, "j2", r#"{{index .Config.Labels "ci.job"}}"#), "7");
    assert_eq!(b.ok(&["ps", "-a", "--filter", "name=j2", "--format", "{{.Labels}}"]).trim(), "ci.job=7,role=db");
    // --label-file: a line each, comments skipped, --label over it.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("labels");
    std::fs::write(&file, "# CI labels\n  ci.job=9\n\nteam=infra\n").unwrap();
    b.ok(&["run", "--name", "lf", "--label-file", &file.to_string_lossy(), "-l", "team=web", "busybox", "true"]);
    assert_eq!(inspect(&b, "lf", "{{json .Config.Labels}}"), r#"{"ci.job":"9","team":"web"}"#);
    for bad in ["=v", ""] {
        let err = b.output(&["run", "--rm", "-l", bad, "busybox", "true"]);
        let text = String::from_utf8_lossy(&err.stderr);
        assert!(err.status.code() == Some(125) && text.contains("empty name"), "{bad:?}: {text}");
    }
}

#[test]
fn add_host_writes_etc_hosts_and_host_gateway_is_the_host_as_the_container_reaches_it() {
    let Some(b) = setup() else { return };
    let hosts = |args: &[&str]| {
        let mut full = vec!["run", "--rm"];
        full.extend_from_slice(args);
        full.extend(["busybox", "cat", "/etc/hosts"]);
        b.ok(&full)
    };
    // The CI idiom: a service under test reaches the host through host.docker.internal.
    let bridged = hosts(&[
        "--hostname",
        "web",
        "--add-host",
        "db:10.1.2.3",
        "--add-host",
        "host.docker.internal:host-gateway",
        "--add-host",
        "v6=[2001:db8::1]",
        "--add-host",
        "web:10.4.4.4",
    ]);
    // docker's order: its own lines, the extra hosts, the container's own name last (so an
    // extra host can give that name another address: the first match wins).
    let lines: Vec<&str> = bridged.lines().skip(6).collect();
    let extra = ["10.1.2.3\tdb", "10.90.0.1\thost.docker.internal", "2001:db8::1\tv6", "10.4.4.4\tweb"];
    assert_eq!(lines[..4], extra, "{bridged}");
    assert!(lines[4].starts_with("10.90.") && lines[4].ends_with("\tweb"), "{bridged}");
    let docker = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\n";
    assert!(bridged.starts_with(docker), "{bridged}");
    let host = hosts(&["--network", "host", "--add-host", "host.docker.internal:host-gateway"]);
    assert!(host.ends_with("127.0.0.1\thost.docker.internal\n"), "{host}");
    b.ok(&["run", "-d", "--name", "eh", "--add-host", "db:10.1.2.3", "busybox", "sleep", "30"]);
    assert_eq!(inspect(&b, "eh", "{{json .HostConfig.ExtraHosts}}"), r#"["db:10.1.2.3"]"#);
    assert_eq!(inspect(&b, "eh", "{{json .HostConfig.Ulimits}}"), "null");
    b.ok(&["run", "-d", "--name", "ul", "--ulimit", "nofile=1024:2048", "busybox", "sleep", "30"]);
    assert_eq!(inspect(&b, "ul", "{{json .HostConfig.Ulimits}}"), r#"[{"Hard":2048,"Name":"nofile","Soft":1024}]"#);
    b.ok(&["run", "-d", "--name", "eh6", "--add-host", "v6=[2001:db8::1]", "busybox", "sleep", "30"]);
    let normal = inspect(&b, "eh6", "{{json .HostConfig.ExtraHosts}}");
    assert_eq!(normal, r#"["v6:2001:db8::1"]"#, "docker's HOST:IP form");
    for bad in ["nocolon", "db:not-an-ip", ":1.2.3.4", "a:[::1"] {
        let out = b.output(&["run", "--rm", "--add-host", bad, "busybox", "true"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("add-host"), "{bad}: {err}");
    }
}

#[test]
fn stop_stops_several_containers_at_once_as_docker() {
    let Some(b) = setup() else { return };
    // `slow` ignores SIGTERM (sleep as PID 1) and waits out -t; `quick` exits on SIGTERM.
    b.ok(&["run", "-d", "--name", "slow", "busybox", "sleep", "300"]);
    b.ok(&["run", "-d", "--name", "quick", "busybox", "sh", "-c", "trap 'exit 0' TERM; sleep 300 & wait"]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(b.ok(&["stop", "-t", "2", "slow", "quick"]), "slow\nquick\n", "printed in the arguments' order");
    let finished = |name: &str| {
        let at = inspect(&b, name, "{{.State.FinishedAt}}");
        chrono::DateTime::parse_from_rfc3339(&at).unwrap_or_else(|e| panic!("{at}: {e}"))
    };
    // One after the other, `quick` would have stopped only after `slow`'s two seconds.
    assert!(finished("quick") < finished("slow"), "quick waited for slow: the stops ran one by one");
    assert_eq!(inspect(&b, "slow", "{{.State.ExitCode}}"), "137");
    // `-s`: another signal than the container's (docker 23); restart takes it too.
    let seen = tempfile::tempdir().unwrap();
    let trapping = "trap 'echo usr1 >> /seen/log; exit 10' USR1; trap 'echo hup >> /seen/log; exit 20' HUP; \
                    trap 'echo term >> /seen/log; exit 30' TERM; sleep 300 & wait";
    let volume = format!("{}:/seen", p(seen.path()));
    b.ok(&["run", "-d", "--name", "sig", "-v", &volume, "busybox", "sh", "-c", trapping]);
    std::thread::sleep(Duration::from_millis(500));
    b.ok(&["stop", "-s", "USR1", "-t", "10", "sig"]);
    assert_eq!(inspect(&b, "sig", "{{.State.ExitCode}}"), "10", "stopped by SIGUSR1, not SIGTERM or SIGKILL");
    b.ok(&["start", "sig"]);
    std::thread::sleep(Duration::from_millis(500));
    b.ok(&["restart", "--signal", "SIGHUP", "-t", "10", "sig"]);
    assert_eq!(inspect(&b, "sig", "{{.State.Status}}"), "running");
    assert_eq!(std::fs::read_to_string(seen.path().join("log")).unwrap(), "usr1\nhup\n");
    let out = b.output(&["stop", "-s", "NOPE", "sig"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("NOPE"), "{out:?}");
    assert_eq!(inspect(&b, "sig", "{{.State.Status}}"), "running", "a bad signal stops nothing");
    // docker's newer name for -t.
    b.ok(&["stop", "--timeout", "0", "sig"]);
    assert_eq!(inspect(&b, "sig", "{{.State.Status}}"), "exited");
}

#[test]
fn commit_change_applies_dockerfile_instructions_to_the_new_image() {
    let Some(b) = setup() else { return };
    b.ok(&["run", "--name", "base", "-e", "GREETING=hi", "busybox", "sh", "-c", "echo data > /made"]);
    let changes = [
        "-c",
        "ENV TARGET=world",
        "--change",
        "CMD echo $GREETING $TARGET",
        "-c",
        "LABEL stage=ci",
        "-c",
        "WORKDIR /srv",
    ];
    let mut args = vec!["commit"];
    args.extend(changes);
    args.extend(["base", "changed:1"]);
    b.ok(&args);
    assert_eq!(b.ok(&["run", "--rm", "changed:1"]), "hi world\n", "the new CMD, through sh, with the new ENV");
    assert_eq!(b.ok(&["run", "--rm", "changed:1", "sh", "-c", "pwd; cat /made"]), "/srv\ndata\n");
    let labels = b.ok(&["inspect", "--type", "image", "-f", "{{index .Config.Labels \"stage\"}}", "changed:1"]);
    assert_eq!(labels.trim(), "ci");
    // An instruction docker refuses is an error before anything is written.
    let err = b.fails(&["commit", "-c", "RUN make", "base", "changed:2"]);
    assert!(err.contains("is not a valid change command"), "{err}");
    assert!(b.output(&["inspect", "--type", "image", "changed:2"]).status.code() == Some(1));
}

#[test]
fn inspect_templates_read_as_docker_scripts_write_them() {
    let Some(b) = setup() else { return };
    let data = tempfile::tempdir().unwrap();
    let bind = format!("{}:/data:ro", data.path().display());
    b.ok(&["run", "-d", "--name", "tpl", "-e", "A=1", "-v", &bind, "busybox", "sleep", "30"]);
    // The idioms of CI scripts: a container's address, its mounts, env, state and command.
    let ip = inspect(&b, "tpl", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}");
    assert!(ip.parse::<std::net::Ipv4Addr>().is_ok(), "{ip:?}");
    assert_eq!(ip, inspect(&b, "tpl", "{{.NetworkSettings.IPAddress}}"));
    let mounts = "{{range .Mounts}}{{.Type}} {{.Source}} -> {{.Destination}} rw={{.RW}};{{end}}";
    assert_eq!(inspect(&b, "tpl", mounts), format!("bind {} -> /data rw=false;", data.path().display()));
    let env = r#"{{range .Config.Env}}{{if eq (index (split . "=") 0) "A"}}{{.}}{{end}}{{end}}"#;
    assert_eq!(inspect(&b, "tpl", env), "A=1");
    assert_eq!(
        inspect(&b, "tpl", r#"{{join .Config.Cmd ","}} {{len .Config.Cmd}} {{.Config.Cmd}}"#),
        "sleep,30 2 [sleep 30]"
    );
    assert_eq!(
        inspect(
            &b,
            "tpl",
            "{{if .State.Running}}up{{else}}down{{end}} {{with .State.Health}}{{.Status}}{{else}}none{{end}}"
        ),
        "up none"
    );
    assert_eq!(
        inspect(&b, "tpl", r#"{{printf "%s:%v" .Name .State.Running}} {{upper .State.Status}}"#),
        "/tpl:true RUNNING"
    );
    // A mistake is an error naming the template, not a silent empty line.
    let err = b.fails(&["inspect", "--format", "{{range .Mounts}}", "tpl"]);
    assert!(err.contains("{{range}} has no {{end}}"), "{err}");
    let err = b.fails(&["inspect", "--format", "{{.State.Health.Status}}", "tpl"]);
    assert!(err.contains("nil pointer evaluating .Status"), "{err}");
    // A template that does not parse: docker's exit status 64, before anything is looked up.
    let out = b.output(&["inspect", "--format", "{{.State.Running", "nosuch"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.code() == Some(64) && err.contains("template parsing error"), "{err}");
    // A reader that went away (`| head`) ends berth quietly, without a panic.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = b.cmd(&["inspect", "tpl"]).stdout(writer).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !err.contains("panicked"), "{err}");
}

#[test]
fn ps_name_filters_are_regular_expressions_and_bad_filters_fail() {
    let Some(b) = setup() else { return };
    for name in ["app-1", "app-10", "myapp-1"] {
        b.ok(&["run", "--name", name, "busybox", "true"]);
    }
    let names = |filter: &str| {
        let mut out: Vec<String> =
            b.ok(&["ps", "-a", "--format", "{{.Names}}", "--filter", filter]).lines().map(String::from).collect();
        out.sort();
        out
    };
    assert_eq!(names("name=^app-1$"), ["app-1"]);
    assert_eq!(names("name=app-1$"), ["app-1", "myapp-1"]);
    assert_eq!(names("name=app-1"), ["app-1", "app-10", "myapp-1"], "unanchored");
    assert_eq!(names("name=^/app"), ["app-1", "app-10"], "docker's names start with a slash");
    for (filter, message) in [("status=bogus", "Invalid filter 'status=bogus'"), ("bogus=1", "Invalid filter 'bogus'")]
    {
        let out = b.output(&["ps", "--filter", filter]);
        assert_eq!(out.status.code(), Some(1), "{filter}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(message), "{filter}: {err}");
    }
}

#[test]
fn commit_keeps_the_containers_settings_as_docker() {
    let Some(b) = setup() else { return };
    let out = b.ok(&["run", "--name", "c", "-u", "1000", "-w", "/srv", "-e", "A=1", "busybox", "echo", "hi"]);
    assert_eq!(out, "hi\n");
    b.ok(&["commit", "-m", "settings", "-a", "Ann <ann@example.com>", "c", "img:1"]);
    let config: serde_json::Value = serde_json::from_str(&inspect(&b, "img:1", "{{json .Config}}")).unwrap();
    assert_eq!(config["User"], "1000", "{config}");
    assert_eq!(config["WorkingDir"], "/srv", "{config}");
    assert_eq!(config["Cmd"], serde_json::json!(["echo", "hi"]), "{config}");
    let env: Vec<&str> = config["Env"].as_array().unwrap().iter().map(|e| e.as_str().unwrap()).collect();
    assert!(env.contains(&"A=1") && env.iter().any(|e| e.starts_with("PATH=")), "{env:?}");
    assert!(!env.iter().any(|e| e.starts_with("HOSTNAME=")), "the container's own host name stays out: {env:?}");
    assert_eq!(inspect(&b, "img:1", "{{.Author}}"), "Ann <ann@example.com>");
    let history = b.ok(&["history", "img:1"]);
    assert!(history.contains("settings") && history.contains("berth commit c"), "{history}");
    // The committed image runs the container's command, as its user, where it worked.
    let out = b.ok(&["run", "--rm", "img:1"]);
    assert_eq!(out, "hi\n");
    let out = b.ok(&["run", "--rm", "img:1", "sh", "-c", "id -u; pwd; echo $A"]);
    assert_eq!(out, "1000\n/srv\n1\n");
    // An entrypoint stays the entrypoint: words given to run replace only the cmd.
    b.ok(&["run", "--name", "e", "--entrypoint", "echo", "busybox", "one"]);
    b.ok(&["commit", "e", "img:2"]);
    assert_eq!(inspect(&b, "img:2", "{{json .Config.Entrypoint}}"), r#"["echo"]"#);
    assert_eq!(inspect(&b, "img:2", "{{json .Config.Cmd}}"), r#"["one"]"#);
    assert_eq!(b.ok(&["run", "--rm", "img:2", "two"]), "two\n");
}

#[test]
fn inspect_reports_a_container_the_oom_killer_ended() {
    let Some(b) = setup() else { return };
    let args = [
        "run",
        "-d",
        "--memory",
        "64m",
        "--tmpfs",
        "/big:size=500m",
        "busybox",
        "dd",
        "if=/dev/zero",
        "of=/big/x",
        "bs=1M",
        "count=200",
    ];
    let id = b.ok(&args).trim().to_owned();
    assert_eq!(b.ok(&["wait", &id]).trim(), "137", "{}", inspect(&b, &id, "{{json .State}}"));
    assert_eq!(inspect(&b, &id, "{{.State.OOMKilled}}"), "true");
    // Foreground too; and a container that ends by itself under a limit was not OOM killed.
    let out = b.output(&[
        "run",
        "--name",
        "fg",
        "--memory",
        "64m",
        "--tmpfs",
        "/big:size=500m",
        "busybox",
        "sh",
        "-c",
        "dd if=/dev/zero of=/big/x bs=1M count=200",
    ]);
    assert_eq!(out.status.code(), Some(137), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(inspect(&b, "fg", "{{.State.OOMKilled}}"), "true");
    let id = b.ok(&["run", "-d", "--memory", "64m", "busybox", "true"]).trim().to_owned();
    assert_eq!(b.ok(&["wait", &id]).trim(), "0");
    assert_eq!(inspect(&b, &id, "{{.State.OOMKilled}}"), "false");
}

#[test]
fn restart_stops_and_starts_a_container_keeping_its_files_and_log() {
    let Some(b) = crate::util::container_store() else { return };
    let pid = |name: &str| b.ok(&["inspect", "--format", "{{.State.Pid}}", name]).trim().to_owned();
    let script = "echo start >> /count; trap 'exit 0' TERM; while :; do sleep 0.1; done";
    b.ok(&["run", "-d", "--name", "svc", "busybox", "sh", "-c", script]);
    let first = pid("svc");
    assert_eq!(b.ok(&["restart", "-t", "5", "svc"]), "svc\n");
    assert_ne!(pid("svc"), first, "a new process");
    assert_eq!(b.ok(&["ps", "--filter", "name=^svc$", "--format", "{{.State}}"]), "running\n");
    assert_eq!(b.ok(&["exec", "svc", "cat", "/count"]), "start\nstart\n", "on the same rootfs");
    // An exited one is started; a `-d --rm` one is kept through its restart, as docker's.
    b.ok(&["run", "--name", "done", "busybox", "true"]);
    b.ok(&["restart", "done"]);
    b.ok(&["run", "-d", "--rm", "--name", "tmp", "busybox", "sh", "-c", script]);
    b.ok(&["restart", "-t", "5", "tmp"]);
    assert_eq!(b.ok(&["ps", "--filter", "name=^tmp$", "--format", "{{.State}}"]), "running\n");
    b.ok(&["stop", "tmp"]);
    let gone = std::time::Instant::now() + Duration::from_secs(10);
    while !b.ok(&["ps", "-aq", "--filter", "name=^tmp$"]).is_empty() {
        assert!(std::time::Instant::now() < gone, "after the restart, --rm still removes it when it stops");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(b.fails(&["restart", "nosuch"]).contains("no such container"));
    // Three restarts at once take turns, and all succeed (before, two failed: "already running").
    let all: Vec<_> = (0..3).map(|_| b.cmd(&["restart", "-t", "5", "svc"]).output().unwrap()).collect();
    let at_once: Vec<_> = (0..3).map(|_| b.cmd(&["restart", "-t", "5", "svc"]).spawn().unwrap()).collect();
    for mut child in at_once {
        assert!(child.wait().unwrap().success());
    }
    assert!(all.iter().all(|o| o.status.success()));
    // A foreground `run --rm` container is kept through a restart too, as docker keeps it.
    let mut fg = b.cmd(&["run", "--rm", "--name", "fg", "busybox", "sh", "-c", script]).spawn().unwrap();
    let up = Instant::now() + Duration::from_secs(10);
    while b.ok(&["ps", "-q", "--filter", "name=^fg$"]).is_empty() {
        assert!(Instant::now() < up, "fg did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(b.ok(&["restart", "-t", "5", "fg"]), "fg\n");
    fg.wait().unwrap();
    assert_eq!(b.ok(&["ps", "--filter", "name=^fg$", "--format", "{{.State}}"]), "running\n");
}

#[test]
fn exec_d_starts_a_command_in_the_background_and_returns() {
    let Some(b) = crate::util::container_store() else { return };
    b.ok(&["run", "-d", "--name", "svc", "busybox", "sleep", "600"]);
    // The command outlives the exec: berth has returned before it writes.
    let out = b.output(&["exec", "-d", "svc", "sh", "-c", "echo noise; sleep 0.5; echo bg > /bg"]);
    assert!(out.status.success() && out.stdout.is_empty(), "{out:?}");
    assert!(b.output(&["exec", "svc", "cat", "/bg"]).stdout.is_empty(), "returned before the command ended");
    let done = Instant::now() + Duration::from_secs(10);
    while b.output(&["exec", "svc", "cat", "/bg"]).stdout != b"bg\n" {
        assert!(Instant::now() < done, "the background command did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A program that is not there is still docker's 127, at once.
    assert_eq!(b.output(&["exec", "-d", "svc", "/no/such"]).status.code(), Some(127));
    assert!(!b.output(&["exec", "-d", "-t", "svc", "true"]).status.success(), "-d with -t is refused");
    // A process that cannot be set up: docker's 126, with the step that failed.
    let out = b.output(&["exec", "-w", "/etc/passwd", "svc", "pwd"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(126), "{err}");
    assert!(err.contains("enter the working directory") && err.contains("Not a directory"), "{err}");
    let out = b.output(&["exec", "-u", "nosuch", "svc", "id"]);
    assert_eq!(out.status.code(), Some(126), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn diff_lists_what_a_container_added_changed_and_deleted() {
    let Some(b) = crate::util::container_store() else { return };
    let script = "echo x >> /etc/motd; mkdir -p /out/sub; echo r > /out/sub/report; rm /bin/vi; echo y > /etc/group";
    b.ok(&["run", "--name", "t", "-v", "results:/results", "busybox", "sh", "-c", script]);
    let out = b.ok(&["diff", "t"]);
    let lines: Vec<&str> = out.lines().collect();
    for want in
        ["C /etc", "C /etc/group", "A /etc/motd", "A /out", "A /out/sub", "A /out/sub/report", "C /bin", "D /bin/vi"]
    {
        assert!(lines.contains(&want), "{want} missing from:\n{out}");
    }
    let mut sorted = lines.clone();
    sorted.sort_by_key(|l| l[2..].to_owned());
    assert_eq!(lines, sorted, "by path, as docker lists them");
    assert!(!out.contains("/results/"), "a volume's files are not the container's changes:\n{out}");
    assert!(!lines.iter().any(|l| l.ends_with(" /proc") || l.ends_with(" /etc/hosts")), "{out}");
    assert!(b.fails(&["diff", "nosuch"]).contains("no such container"));
    // A directory emptied and made again: what the image had in it is deleted (an opaque
    // directory of the container's layer).
    let had = b.ok(&["run", "--rm", "busybox", "ls", "/home"]);
    let first = had.lines().next().expect("the image has something in /home").to_owned();
    b.ok(&["run", "--name", "o", "busybox", "sh", "-c", "rm -rf /home; mkdir /home; touch /home/new"]);
    let out = b.ok(&["diff", "o"]);
    for want in ["C /home".to_owned(), format!("D /home/{first}"), "A /home/new".to_owned()] {
        assert!(out.lines().any(|l| l == want), "{want} missing from:\n{out}");
    }
}

#[test]
fn wait_and_logs_follow_read_a_removed_containers_end_and_usage_errors_are_125() {
    let Some(b) = setup() else { return };
    // `run -d --rm` then `wait`: the code, however quickly the container goes.
    for i in 0..5 {
        let id = b.ok(&["run", "-d", "--rm", "--network", "none", "busybox", "sh", "-c", "sleep 0.2; exit 3"]);
        assert_eq!(b.ok(&["wait", id.trim()]).trim(), "3", "round {i}");
    }
    let id = b.ok(&["run", "-d", "--rm", "--network", "none", "busybox", "sh", "-c", "echo a; sleep 0.3; echo bye"]);
    assert_eq!(b.ok(&["logs", "-f", id.trim()]), "a\nbye\n");
    // Several: one that is missing is reported, the others still waited for; exit 1.
    b.ok(&["create", "--name", "never", "busybox", "true"]);
    b.ok(&["run", "-d", "--name", "five", "--network", "none", "busybox", "sh", "-c", "exit 5"]);
    let out = b.output(&["wait", "never", "nosuch", "five"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "0\n5\n", "a created container's code is 0, as docker's");
    assert!(String::from_utf8_lossy(&out.stderr).contains("nosuch"));
    let restart = b.ok(&["inspect", "--format", "{{.RestartCount}} {{.HostConfig.RestartPolicy.Name}}", "five"]);
    assert_eq!(restart, "0 no\n", "docker's fields for no restart policy");
    // An unknown flag: docker's 125, for any command.
    for args in [&["ps", "--bogus"][..], &["wait"][..], &["logs", "--nope", "five"][..]] {
        assert_eq!(b.output(args).status.code(), Some(125), "{args:?}");
    }
    assert_eq!(b.output(&["ps", "--help"]).status.code(), Some(0));
    // --platform names what the image must be: a one-platform image of another is pulled
    // for it (as docker 20.10), and refused when that cannot be done (nothing listens on
    // port 1) or is not wanted (--pull never).
    let err = b.fails(&["run", "--rm", "--pull", "never", "--platform", "linux/s390x", "busybox", "true"]);
    assert!(err.contains("not for linux/s390x"), "{err}");
    b.ok(&["tag", "busybox", "127.0.0.1:1/busybox"]);
    let out = b.output(&["run", "--rm", "--platform", "linux/s390x", "127.0.0.1:1/busybox", "true"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("not for linux/s390x (--platform): pull 127.0.0.1:1/busybox"),
        "{err}"
    );
    let host = b.ok(&["inspect", "--format", "{{.Os}}/{{.Architecture}}", "busybox"]);
    assert_eq!(b.ok(&["run", "--rm", "--platform", host.trim(), "busybox", "echo", "ok"]), "ok\n");
}

#[test]
fn container_and_image_groups_are_dockers_verbs_and_container_prune_keeps_running_ones() {
    let Some(b) = setup() else { return };
    b.ok(&["container", "run", "--name", "done", "-l", "ci=1", "busybox", "true"]);
    b.ok(&["container", "create", "--name", "made", "busybox", "true"]);
    b.ok(&["container", "run", "-d", "--name", "up", "busybox", "sleep", "60"]);
    let names = |b: &Berth| b.ok(&["container", "ls", "-a", "--format", "{{.Names}} {{.State}}"]);
    assert_eq!(names(&b), "up running\nmade created\ndone exited\n");
    // The groups' verbs are the top-level ones; inspect looks at its own kind only.
    assert_eq!(b.ok(&["container", "inspect", "-f", "{{.State.Status}}", "up"]).trim(), "running");
    assert!(b.fails(&["container", "inspect", "busybox"]).contains("no such container: busybox"));
    assert!(b.ok(&["image", "ls"]).contains("busybox"));
    assert!(b.ok(&["image", "inspect", "-f", "{{.Id}}", "busybox"]).starts_with("sha256:"));
    // Without -f, the answer is read from stdin: no keeps them.
    let mut asked = b.cmd(&["container", "prune"]);
    asked.stdin(std::process::Stdio::null());
    assert!(asked.output().unwrap().status.success());
    assert_eq!(names(&b).lines().count(), 3, "nothing removed without a yes");
    // Filters: label=, until= (created before: a container made now is younger than 1h).
    let out = b.ok(&["container", "prune", "-f", "--filter", "label=ci"]);
    let done_id = "Deleted Containers:\n";
    assert!(out.starts_with(done_id) && out.contains("Total reclaimed space: "), "{out}");
    assert_eq!(names(&b), "up running\nmade created\n");
    assert_eq!(b.ok(&["container", "prune", "-f", "--filter", "until=1h"]), "Total reclaimed space: 0B\n");
    assert!(b.fails(&["container", "prune", "-f", "--filter", "name=x"]).contains("invalid filter"));
    // label!=: a container with the label stays; with several, only one that has them all
    // stays, as docker's daemon decides.
    b.ok(&["create", "--name", "kept", "-l", "keep=1", "busybox", "true"]);
    b.ok(&["container", "prune", "-f", "--filter", "label!=keep"]);
    assert_eq!(names(&b), "kept created\nup running\n");
    b.ok(&["container", "prune", "-f", "--filter", "label!=keep", "--filter", "label!=other"]);
    assert_eq!(names(&b), "up running\n", "it lacks one of the two labels: it goes");
    b.ok(&["create", "--name", "last", "busybox", "true"]);
    let out = b.ok(&["container", "prune", "-f"]);
    assert_eq!(out.lines().nth(1).map(str::len), Some(64), "the removed container's ID: {out}");
    assert_eq!(names(&b), "up running\n", "a running container stays");
    b.ok(&["container", "rm", "-f", "up"]);
    let entries = |dir: &str| -> Vec<String> {
        let list = std::fs::read_dir(b.root.path().join(dir)).unwrap().flatten();
        list.map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| !n.starts_with('.')).collect()
    };
    assert_eq!(entries("containers"), Vec::<String>::new(), "prune removed the records");
    assert_eq!(entries("snapshots/overlay").len(), 2, "and their snapshots: the layer's and the scaffold's stay");
}

#[test]
fn system_prune_removes_what_docker_removes_and_spares_what_is_in_use() {
    let Some(b) = setup() else { return };
    b.import_tiny("unused:1", "not needed");
    b.ok(&["run", "--name", "stopped", "busybox", "true"]);
    b.ok(&["run", "--name", "with-volume", "-v", "/data", "busybox", "true"]);
    b.ok(&["run", "-d", "--name", "up", "busybox", "sleep", "60"]);
    b.ok(&["network", "create", "spare"]);
    let names = |b: &Berth| b.ok(&["ps", "-a", "--format", "{{.Names}}"]);
    // --filter: what was made in the last hour stays with until=1h; label= picks by label.
    let out = b.ok(&["system", "prune", "-af", "--grace", "0s", "--filter", "until=1h"]);
    assert_eq!(out, "Total reclaimed space: 0B\n", "everything here is younger than an hour");
    let out = b.ok(&["system", "prune", "-af", "--filter", "label=nothing-has-it"]);
    assert!(!out.contains("Deleted"), "{out}");
    assert_eq!(names(&b).lines().count(), 3);
    assert!(b.fails(&["system", "prune", "-f", "--filter", "dangling=true"]).contains("invalid filter"));
    // No yes on stdin: nothing goes.
    let mut asked = b.cmd(&["system", "prune"]);
    asked.stdin(std::process::Stdio::null());
    let out = asked.output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("  - all stopped containers"));
    assert_eq!(names(&b).lines().count(), 3);
    // until= a minute from now (a negative duration): all of them are older.
    let out = b.ok(&["system", "prune", "-f", "--filter", "until=-1m"]);
    assert!(out.contains("Deleted Containers:") && out.contains("Deleted Networks:\nspare\n"), "{out}");
    assert!(!out.contains("Deleted Volumes"), "volumes stay without --volumes: {out}");
    assert_eq!(names(&b), "up\n", "the running container stays");
    assert_eq!(b.ok(&["volume", "ls", "-q"]).lines().count(), 1);
    let out = b.ok(&["system", "prune", "-f", "--volumes"]);
    assert!(out.contains("Deleted Volumes:"), "{out}");
    assert_eq!(b.ok(&["volume", "ls", "-q"]), "");
    // -a: every image no container was made from; the running container's image stays.
    let out = b.ok(&["system", "prune", "-af", "--grace", "0s"]);
    assert!(out.contains("untagged: unused:1") && !out.contains("busybox"), "{out}");
    assert_eq!(b.ok(&["images", "--format", "{{.Repository}}"]), "busybox\n");
    b.ok(&["rm", "-f", "up"]);
    b.ok(&["system", "prune", "-af", "--grace", "0s"]);
    assert_eq!(b.ok(&["images", "-q"]), "");
    let blobs = std::fs::read_dir(b.root.path().join("content/blobs/sha256")).unwrap().count();
    assert_eq!(blobs, 0, "the blobs went with the images");
}

#[test]
fn logs_since_and_until_and_ps_last_read_as_dockers() {
    let Some(b) = setup() else { return };
    b.ok(&["run", "-d", "--name", "talk", "busybox", "sh", "-c", "echo one; sleep 1; echo two; sleep 60"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let stamped = loop {
        let out = b.ok(&["logs", "-t", "talk"]);
        if out.lines().count() == 2 || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let second = stamped.lines().nth(1).and_then(|l| l.split_whitespace().next()).expect("two stamped lines");
    // Lines logged at the --since and --until times are shown, as docker shows them.
    assert_eq!(b.ok(&["logs", "--since", second, "talk"]), "two\n");
    assert_eq!(b.ok(&["logs", "--until", second, "talk"]), "one\ntwo\n");
    let first = stamped.lines().next().and_then(|l| l.split_whitespace().next()).unwrap();
    assert_eq!(b.ok(&["logs", "--until", first, "talk"]), "one\n");
    assert_eq!(b.ok(&["logs", "--since", "", "--until", "1m30s", "talk"]), "", "docker's empty and compound forms");
    assert_eq!(b.ok(&["logs", "--since", "1h", "talk"]), "one\ntwo\n");
    assert_eq!(b.ok(&["logs", "--until", "1h", "talk"]), "");
    // --tail first, then the window, as docker's.
    assert_eq!(b.ok(&["logs", "--tail", "1", "--until", first, "talk"]), "");
    // -f stops at --until even while the container runs on.
    let started = Instant::now();
    assert_eq!(b.ok(&["logs", "-f", "--until", first, "talk"]), "one\n");
    assert!(started.elapsed() < Duration::from_secs(30), "follow stopped at --until");
    assert!(b.fails(&["logs", "--since", "soon", "talk"]).contains("--since soon"));
    b.ok(&["rm", "-f", "talk"]);
    for name in ["first", "second", "third"] {
        b.ok(&["create", "--name", name, "busybox", "true"]);
    }
    let names = |args: &[&str]| {
        let mut full = vec!["ps", "--format", "{{.Names}}"];
        full.extend_from_slice(args);
        b.ok(&full)
    };
    assert_eq!(names(&["-l"]), "third\n", "-l: the newest, of any state");
    assert_eq!(names(&["-n", "2"]), "third\nsecond\n");
    assert_eq!(names(&["-n", "2", "-l"]), "third\nsecond\n", "-n wins over -l, as docker's");
    assert_eq!(names(&["-n", "0"]), "", "0 is no limit: running ones only");
    assert_eq!(names(&["-n", "-1"]), "", "-1 is no limit, and without -a only running ones");
    assert_eq!(names(&["-n", "2", "--filter", "name=^f"]), "first\n", "filters first, then the count");
}

#[test]
fn image_prune_reads_its_answer_from_stdin_and_keeps_the_images_of_containers() {
    let Some(b) = setup() else { return };
    b.import_tiny("dang:1", "first");
    b.ok(&["create", "--name", "old", "dang:1", "true"]);
    // The name moves to a new image: the container's image is dangling now.
    b.import_tiny("dang:1", "second");
    let yes = |args: &[&str]| {
        let mut cmd = b.cmd(args);
        cmd.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"y\n").unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // Before, without a terminal berth refused to ask; and it removed the container's image.
    yes(&["image", "prune", "--grace", "0s"]);
    let listed = b.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert_eq!(listed.lines().filter(|l| *l == "<none>:<none>").count(), 1, "the container's image stays: {listed}");
    let id = b.ok(&["inspect", "-f", "{{.Image}}", "old"]);
    b.ok(&["image", "inspect", id.trim()]);
    let out = yes(&["image", "prune", "-a", "--grace", "0s"]);
    assert!(out.contains("untagged: dang:1") && out.contains("untagged: busybox:latest"), "{out}");
    let listed = b.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert_eq!(listed, "<none>:<none>\n", "only the container's image is left");
}

#[test]
fn ps_size_shows_a_containers_own_writes_and_with_its_image() {
    let Some(b) = setup() else { return };
    b.ok(&["run", "-d", "--name", "writer", "busybox", "sh", "-c", "head -c 300000 /dev/zero > /big; sleep 60"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let size = loop {
        let size = b.ok(&["ps", "--format", "{{.Size}}"]);
        if size.starts_with("3") || Instant::now() > deadline {
            break size;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // `300kB (virtual 2.4MB)`: its own writes, then with the image's 2.1 MB of busybox.
    let (own, virt) = size.trim().split_once(" (virtual ").expect("docker's SIZE form");
    let kb = |s: &str| s.trim_end_matches(')').trim_end_matches("kB").parse::<f64>().ok();
    assert!(own.ends_with("kB") && kb(own).is_some_and(|k| (300.0..400.0).contains(&k)), "{size}");
    assert!(virt.ends_with("MB)"), "the image's layers count in virtual: {size}");
    let table = b.ok(&["ps", "-s"]);
    assert!(table.lines().next().unwrap().ends_with("SIZE") && table.contains(own), "{table}");
    assert!(!b.ok(&["ps"]).contains("SIZE"), "only with -s");
    b.ok(&["rm", "-f", "writer"]);
}

/// `version` and `info` as CI logs print them: docker's templates over docker's field names,
/// and counts that follow the store (a running and a stopped container, one image).
#[test]
fn version_and_info_report_the_binary_the_machine_and_the_store() {
    let Some(b) = setup() else { return };
    let version = b.ok(&["version", "--format", "{{.Client.Version}} {{.Client.Os}}"]);
    assert_eq!(version, format!("{} linux\n", env!("CARGO_PKG_VERSION")));
    let text = b.ok(&["version"]);
    for field in ["Client:\n", " Version:      ", " Git commit:   ", " OS/Arch:      linux/"] {
        assert!(text.contains(field), "{field:?} in {text}");
    }
    let count = |b: &Berth| {
        b.ok(&["info", "--format", "{{.Containers}} {{.ContainersRunning}} {{.ContainersStopped}} {{.Images}}"])
    };
    assert_eq!(count(&b), "0 0 0 1\n", "the busybox image alone");
    let id = b.ok(&["run", "-d", "busybox", "sleep", "60"]);
    b.ok(&["run", "--name", "done", "busybox", "true"]);
    assert_eq!(count(&b), "2 1 1 1\n");
    b.ok(&["tag", "busybox", "another:name"]);
    assert_eq!(count(&b), "2 1 1 1\n", "a second name of one image is one image");
    let json: serde_json::Value = serde_json::from_str(&b.ok(&["system", "info", "--format", "json"])).unwrap();
    assert_eq!(json["DockerRootDir"], p(b.root.path()));
    assert_eq!(json["OSType"], "linux");
    assert_eq!(json["Runtimes"]["berth"]["path"].as_str().map(|s| s.ends_with("berth")), Some(true), "{json}");
    assert!(["overlayfs", "fuse-overlayfs", "native"].contains(&json["Driver"].as_str().unwrap()), "{json}");
    assert!(json["NCPU"].as_u64().unwrap() >= 1 && json["MemTotal"].as_u64().unwrap() > 1 << 20, "{json}");
    let text = b.ok(&["info"]);
    for line in [
        "Containers: 2\n Running: 1\n",
        "Images: 1\n",
        &format!("Storage Driver: {}\n", json["Driver"].as_str().unwrap()),
        "Default Runtime: berth\n",
        &format!("Root Dir: {}\n", p(b.root.path())),
    ] {
        assert!(text.contains(line), "{line:?} in {text}");
    }
    assert!(!b.output(&["info", "--format", "{{.Containers"]).status.success(), "a broken template is an error");
    b.ok(&["rm", "-f", id.trim(), "done"]);
}

/// docker's hard conflict: `rmi -f ID` of an image a running container uses is refused and
/// changes nothing; `rmi -f NAME` of its last name only untags it, and the image stays
/// (dangling) until the container is gone.
#[test]
fn rmi_never_deletes_the_image_of_a_running_container() {
    let Some(b) = setup() else { return };
    b.ok(&["tag", "busybox", "svc:1"]);
    let id = b.ok(&["inspect", "--format", "{{.Id}}", "svc:1"]).trim().to_owned();
    let ctr = b.ok(&["run", "-d", "svc:1", "sleep", "60"]).trim().to_owned();
    let err = b.fails(&["rmi", "-f", &id[7..19]]);
    assert!(err.contains("(cannot be forced) - image is being used by running container"), "{err}");
    assert_eq!(b.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]), "busybox:latest\nsvc:1\n");
    b.ok(&["rmi", "busybox"]);
    let out = b.ok(&["rmi", "-f", "svc:1"]);
    assert_eq!(out, "Untagged: svc:1\n", "untagged, not deleted");
    assert_eq!(b.ok(&["images", "-f", "dangling=true", "-q"]).trim(), &id[7..19]);
    assert_eq!(b.ok(&["exec", &ctr, "echo", "alive"]), "alive\n");
    b.ok(&["rm", "-f", &ctr]);
    assert!(b.ok(&["image", "prune", "-f"]).contains(&id), "the dangling image goes once its container has");
}

/// docker's on/off flags take `=true`/`=false` (scripts pass `-t=$TTY`, `--rm=$CLEAN`), and a
/// bare flag still means true, alone or in a cluster (`-dit`).
#[test]
fn on_off_flags_take_a_value_as_dockers_do() {
    let Some(b) = setup() else { return };
    assert_eq!(b.ok(&["run", "-d=false", "-t=false", "busybox", "echo", "fg"]), "fg\n");
    b.ok(&["run", "--rm=false", "--name", "kept", "busybox", "true"]);
    b.ok(&["run", "--rm=true", "--name", "gone", "busybox", "true"]);
    assert_eq!(b.ok(&["ps", "-a=true", "--format", "{{.Names}}"]), "kept\n");
    let id = b.ok(&["run", "-dit", "busybox", "sh"]).trim().to_owned();
    assert_eq!(b.ok(&["inspect", "--format", "{{.Config.Tty}} {{.Config.OpenStdin}}", &id]), "true true\n");
    let out = b.output(&["run", "--rm=maybe", "busybox", "true"]);
    assert_eq!(out.status.code(), Some(125), "a usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid value 'maybe'"));
    b.ok(&["rm", "-f", &id, "kept"]);
}

/// `--expose` as docker's (ports and ranges, published by -P), and inspect's ExposedPorts,
/// PublishAllPorts, an exposed port that is not published (null), and the command line
/// split into Entrypoint and Cmd.
#[test]
fn expose_and_inspects_exposed_ports_entrypoint_and_cmd() {
    let Some(b) = setup() else { return };
    let all = b.ok(&[
        "run",
        "-d",
        "--expose",
        "9000",
        "--expose",
        "7000-7001/udp",
        "-P",
        "--entrypoint",
        "sh",
        "busybox",
        "-c",
        "sleep 60",
    ]);
    let v: serde_json::Value = serde_json::from_str(&b.ok(&["inspect", all.trim()])).unwrap();
    let c = &v[0];
    assert_eq!(c["Config"]["Entrypoint"], serde_json::json!(["sh"]), "{c}");
    assert_eq!(c["Config"]["Cmd"], serde_json::json!(["-c", "sleep 60"]));
    let exposed: Vec<&String> = c["Config"]["ExposedPorts"].as_object().unwrap().keys().collect();
    assert_eq!(exposed, ["7000/udp", "7001/udp", "9000/tcp"]);
    assert_eq!(c["HostConfig"]["PublishAllPorts"], true);
    let published = c["NetworkSettings"]["Ports"]["9000/tcp"][0]["HostPort"].as_str().unwrap();
    assert!(published.parse::<u16>().unwrap() > 0, "-P publishes --expose's ports: {c}");
    assert!(b.ok(&["port", all.trim()]).contains("7001/udp -> 0.0.0.0:"));
    let some = b.ok(&[
        "run",
        "-d",
        "--expose",
        "9000",
        "-p",
        "127.0.0.1::8080",
        "-p",
        "127.0.0.1::7100-7101",
        "busybox",
        "sleep",
        "60",
    ]);
    let ranged = b.ok(&["port", some.trim()]);
    assert!(
        ranged.contains("7100/tcp -> 127.0.0.1:") && ranged.contains("7101/tcp -> 127.0.0.1:"),
        "a range: {ranged}"
    );
    let v: serde_json::Value = serde_json::from_str(&b.ok(&["inspect", some.trim()])).unwrap();
    let ports = &v[0]["NetworkSettings"]["Ports"];
    assert!(ports["9000/tcp"].is_null() && ports["8080/tcp"][0]["HostIp"] == "127.0.0.1", "{ports}");
    assert_eq!(v[0]["HostConfig"]["PublishAllPorts"], false);
    assert!(v[0]["Config"]["Entrypoint"].is_null() && v[0]["Config"]["Cmd"] == serde_json::json!(["sleep", "60"]));
    let out = b.output(&["run", "--expose", "90-80", "busybox", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid range format for --expose: 90-80"));
    b.ok(&["rm", "-f", all.trim(), some.trim()]);
}

/// `--restart` as docker's: on-failure:N restarts a failing process N times, always restarts
/// until a user's stop (which also ends a wait between two runs), and RestartCount and the
/// policy show in inspect.
#[test]
fn restart_policies_start_the_process_again_until_stopped() {
    let Some(b) = setup() else { return };
    let field = |name: &str, tpl: &str| b.ok(&["inspect", "--format", tpl, name]).trim().to_owned();
    let until = |name: &str, tpl: &str, want: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while field(name, tpl) != want {
            assert!(Instant::now() < deadline, "{name}: {tpl} is {} not {want}", field(name, tpl));
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    b.ok(&["run", "-d", "--name", "fails", "--restart", "on-failure:2", "busybox", "sh", "-c", "echo run; exit 3"]);
    until("fails", "{{.State.Status}} {{.RestartCount}}", "exited 2");
    assert_eq!(
        field("fails", "{{.State.ExitCode}} {{json .HostConfig.RestartPolicy}}"),
        r#"3 {"MaximumRetryCount":2,"Name":"on-failure"}"#
    );
    assert_eq!(b.ok(&["logs", "fails"]), "run\nrun\nrun\n", "the first run and two restarts");

    b.ok(&["run", "-d", "--name", "loops", "--restart", "always", "busybox", "sh", "-c", "sleep 0.3"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while field("loops", "{{.RestartCount}}").parse::<u32>().unwrap() < 2 {
        assert!(Instant::now() < deadline, "always restarts an exit 0");
        std::thread::sleep(Duration::from_millis(50));
    }
    b.ok(&["stop", "loops"]);
    let stopped = field("loops", "{{.State.Status}} {{.RestartCount}}");
    // A supervisor killed while it waits to restart: exited, not restarting for ever.
    b.ok(&["run", "-d", "--name", "orphan", "--restart", "always", "busybox", "sh", "-c", "sleep 0.1"]);
    let id = field("orphan", "{{.Id}}");
    until("orphan", "{{if ge .RestartCount 5}}late{{end}}", "late");
    until("orphan", "{{.State.Status}}", "restarting");
    let supervisor = std::fs::read_dir("/proc").unwrap().flatten().find_map(|e| {
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        (text.contains("__supervise") && text.contains(&id))
            .then(|| e.file_name().to_string_lossy().parse::<i32>().ok())?
    });
    let pid = rustix::process::Pid::from_raw(supervisor.expect("the supervisor")).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
    until("orphan", "{{.State.Status}}", "exited");
    assert!(stopped.starts_with("exited "), "{stopped}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(field("loops", "{{.State.Status}} {{.RestartCount}}"), stopped, "a stopped container stays stopped");
    // A user's start ends the stop: the policy restarts it again. A stop that lands after the
    // policy decided to restart it (the count is up, the status still `restarting`) and before
    // the process runs again is final when `stop` returns (the start used to clear its mark,
    // and the policy went on restarting the process).
    for i in 0..3 {
        b.ok(&["start", "loops"]);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut waiting = None;
        loop {
            assert!(Instant::now() < deadline, "round {i}: never caught between two runs");
            let now = field("loops", "{{.State.Status}} {{.RestartCount}}");
            match (now.split_once(' ').expect("status and count"), &waiting) {
                (("restarting", n), None) => waiting = Some(n.to_owned()),
                (("restarting", n), Some(was)) if n != was => break,
                (("running", _), _) => waiting = None,
                _ => {}
            }
        }
        b.ok(&["stop", "loops"]);
        let now = field("loops", "{{.State.Status}} {{.RestartCount}}");
        assert!(now.starts_with("exited "), "round {i}: {now} right after stop");
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(field("loops", "{{.State.Status}} {{.RestartCount}}"), now, "round {i}: started again after stop");
    }
    // `kill` of one waiting to be started again ends it, as docker's does (it said "not
    // running", and the policy went on).
    b.ok(&["start", "loops"]);
    until("loops", "{{.State.Status}}", "restarting");
    b.ok(&["kill", "loops"]);
    until("loops", "{{.State.Status}}", "exited");
    let killed = field("loops", "{{.State.Status}} {{.RestartCount}}");
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(field("loops", "{{.State.Status}} {{.RestartCount}}"), killed, "started again after kill");

    let out = b.output(&["run", "-d", "--rm", "--restart", "always", "busybox", "true"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("conflicting options: --restart and --rm"));
    let out = b.output(&["run", "--restart", "always", "busybox", "true"]);
    assert_eq!(out.status.code(), Some(125), "a foreground run has no supervisor to restart it");
    let out = b.output(&["run", "-d", "--restart", "always:3", "busybox", "true"]);
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("maximum retry count cannot be used with restart policy 'always'"));
    b.ok(&["run", "-d", "--name", "never", "--restart=no", "busybox", "true"]);
    b.ok(&["rm", "-f", "fails", "loops", "never", "orphan"]);
}

/// `docker run --rm -p ... IMG &` then curl: a foreground run publishes its ports too, on
/// the bridge and with `--network none` (through the container's loopback), and a port
/// that is taken fails the run before its process starts.
#[test]
fn a_foreground_run_publishes_its_ports() {
    let Some(b) = setup() else { return };
    let serve =
        "mkdir -p /www && echo fg-served > /www/index.html; trap 'exit 0' TERM; httpd -f -p 8080 -h /www & wait";
    for network in ["bridge", "none"] {
        let name = format!("fg-{network}");
        let mut child = b
            .cmd(&[
                "run",
                "--rm",
                "--name",
                &name,
                "--network",
                network,
                "-p",
                "127.0.0.1::8080",
                "busybox",
                "sh",
                "-c",
                serve,
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let port = loop {
            let out = b.output(&["port", &name, "8080"]);
            let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if let Some(p) = text.rsplit(':').next().and_then(|p| p.parse::<u16>().ok()) {
                break p;
            }
            assert!(Instant::now() < deadline, "{network}: no published port: {text}");
            std::thread::sleep(Duration::from_millis(50));
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let reply = std::net::TcpStream::connect(("127.0.0.1", port)).ok().map(|_| get(port));
            if reply.as_deref().is_some_and(|r| r.contains("fg-served")) {
                break;
            }
            assert!(Instant::now() < deadline, "{network}: {reply:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
        // SIGTERM reaches the container, which exits 0; the run ends with it.
        rustix::process::kill_process(rustix::process::Pid::from_child(&child), rustix::process::Signal::TERM).unwrap();
        assert!(child.wait().unwrap().success(), "{network}");
    }
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = format!("127.0.0.1:{}:80", taken.local_addr().unwrap().port());
    let out = b.output(&["run", "--rm", "-p", &busy, "busybox", "echo", "ran"]);
    assert!(
        !out.status.success() && !String::from_utf8_lossy(&out.stdout).contains("ran"),
        "the process never started"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Address already in use"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn top_lists_a_running_containers_processes_and_no_others() {
    let Some(b) = setup() else { return };
    b.ok(&["run", "-d", "--name", "toppy", "busybox", "sh", "-c", "sleep 301 & sleep 302"]);
    // A process of the host beside it, which must not be listed.
    let mut outside = std::process::Command::new("sleep").arg("303").spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut out = b.ok(&["top", "toppy"]);
    while !(out.contains("sleep 301") && out.contains("sleep 302")) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        out = b.ok(&["top", "toppy"]);
    }
    let titles: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(titles, ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"], "{out}");
    let pid = inspect(&b, "toppy", "{{.State.Pid}}");
    let pids: Vec<&str> = out.lines().skip(1).filter_map(|l| l.split_whitespace().nth(1)).collect();
    assert!(pids.contains(&pid.as_str()), "the container's first process {pid} is listed: {out}");
    assert!(out.contains("sleep 301") && out.contains("sleep 302"), "{out}");
    assert!(!out.contains("sleep 303"), "a host process is not the container's: {out}");
    let chosen = b.ok(&["container", "top", "toppy", "-o", "pid,args"]);
    assert!(chosen.starts_with("PID") && chosen.contains("sleep 302") && !chosen.contains("sleep 303"), "{chosen}");
    let err = b.fails(&["top", "toppy", "-o", "args"]);
    assert!(err.contains("Couldn't find PID field in ps output"), "{err}");
    outside.kill().unwrap();
    let _ = outside.wait();
    b.ok(&["rm", "-f", "toppy"]);
    b.ok(&["create", "--name", "idle", "busybox", "true"]);
    let err = b.fails(&["top", "idle"]);
    assert!(err.contains("is not running"), "{err}");
}

#[test]
fn ipc_host_none_and_another_containers_namespace_as_dockers() {
    let Some(b) = setup() else { return };
    let host_ns = std::fs::read_link("/proc/self/ns/ipc").unwrap().display().to_string();
    let marker = format!("/dev/shm/berth-ipc-test-{}", std::process::id());
    std::fs::write(&marker, "host\n").unwrap();
    let script = format!("readlink /proc/self/ns/ipc; cat {marker} 2>/dev/null || echo no-marker; ls -d /dev/shm 2>/dev/null || echo no-shm");
    let mut runtimes = vec!["berth"];
    if crate::util::require_tool("runc") {
        runtimes.push("runc");
    }
    for runtime in runtimes {
        let run =
            |ipc: &str| b.ok(&["run", "--rm", "--runtime", runtime, "--ipc", ipc, "busybox", "sh", "-c", &script]);
        assert_eq!(run("host"), format!("{host_ns}\nhost\n/dev/shm\n"), "{runtime}: the host's namespace and /dev/shm");
        let own = run("private");
        assert!(!own.starts_with(&host_ns) && own.ends_with("no-marker\n/dev/shm\n"), "{runtime}: {own}");
        assert!(run("none").ends_with("no-marker\nno-shm\n"), "{runtime}: --ipc none has no /dev/shm");
    }
    std::fs::remove_file(&marker).unwrap();
    // A shareable donor: a joiner has its namespace and its /dev/shm, both ways.
    b.ok(&[
        "run",
        "-d",
        "--name",
        "donor",
        "--ipc",
        "shareable",
        "busybox",
        "sh",
        "-c",
        "echo from-donor > /dev/shm/d; sleep 60",
    ]);
    std::thread::sleep(Duration::from_millis(500));
    let donor_ns = b.ok(&["exec", "donor", "readlink", "/proc/self/ns/ipc"]);
    let joined = b.ok(&[
        "run",
        "--rm",
        "--ipc",
        "container:donor",
        "busybox",
        "sh",
        "-c",
        "readlink /proc/self/ns/ipc; cat /dev/shm/d; echo from-joiner > /dev/shm/j",
    ]);
    assert_eq!(joined, format!("{donor_ns}from-donor\n"));
    assert_eq!(b.ok(&["exec", "donor", "cat", "/dev/shm/j"]), "from-joiner\n");
    let id = inspect(&b, "donor", "{{.Id}}");
    b.ok(&["create", "--name", "joiner", "--ipc", "container:donor", "busybox", "true"]);
    assert_eq!(inspect(&b, "joiner", "{{.HostConfig.IpcMode}}"), format!("container:{id}"));
    assert_eq!(inspect(&b, "donor", "{{.HostConfig.IpcMode}}"), "shareable");
    // Refused as docker refuses them, before anything runs.
    b.ok(&["run", "-d", "--name", "private", "busybox", "sleep", "60"]);
    assert_eq!(inspect(&b, "private", "{{.HostConfig.IpcMode}}"), "private");
    for (args, why) in [
        (&["--ipc", "container:private"][..], "non-shareable IPC"),
        (&["--ipc", "bogus"], "invalid IPC mode"),
        (&["--ipc", "host", "--sysctl", "kernel.shmmax=65536"], "host's IPC namespace"),
        (&["--ipc", "container:donor", "--sysctl", "kernel.shmmax=65536"], "another container's IPC namespace"),
        (&["--ipc", "container:donor", "--runtime", "runc"], "berth's own runtime only"),
    ] {
        let full = [&["run", "--rm"][..], args, &["busybox", "true"]].concat();
        let out = b.output(&full);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.code() == Some(125) && err.contains(why), "{args:?}: {err}");
    }
    b.ok(&["rm", "-f", "donor", "private", "joiner"]);
}

/// The host's processes whose command line starts with `args`.
fn running(args: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.starts_with(args))
        .collect()
}

#[test]
fn pid_uts_and_cgroup_namespaces_the_hosts_or_another_containers_as_dockers() {
    let Some(b) = setup() else { return };
    let link = |n: &str| std::fs::read_link(format!("/proc/self/ns/{n}")).unwrap().display().to_string();
    let node = rustix::system::uname().nodename().to_string_lossy().into_owned();
    let host = format!("{}\n{}\n{}\n{node}\n{node}\n", link("pid"), link("uts"), link("cgroup"));
    let script = "for n in pid uts cgroup; do readlink /proc/self/ns/$n; done; hostname; echo $HOSTNAME";
    let mut runtimes = vec!["berth"];
    if crate::util::require_tool("runc") {
        runtimes.push("runc");
    }
    for runtime in runtimes {
        let run = |modes: &[&str]| {
            b.ok(&[&["run", "--rm", "--runtime", runtime], modes, &["busybox", "sh", "-c", script]].concat())
        };
        let shared = run(&["--pid", "host", "--uts", "host", "--cgroupns", "host", "--userns", "host"]);
        let lines: Vec<&str> = shared.lines().collect();
        let want: Vec<&str> = host.lines().collect();
        // runc gets no cgroup namespace from berth's bundle: the cgroup line is the berth runtime's alone.
        assert_eq!((lines[0], lines[1], &lines[3..]), (want[0], want[1], &want[3..]), "{runtime}: the host's");
        let own = run(&[]);
        let own: Vec<&str> = own.lines().collect();
        assert!(own[0] != want[0] && own[1] != want[1] && own[3] != node, "{runtime}: its own: {own:?}");
        if runtime == "berth" {
            assert_eq!(lines[2], want[2], "the host's cgroup namespace");
            assert_ne!(own[2], want[2], "a cgroup namespace of its own");
        }
    }
    // Another container's PID namespace: its processes are the joiner's to see.
    b.ok(&["run", "-d", "--name", "pdonor", "busybox", "sh", "-c", "exec sleep 3911"]);
    let donor_ns = b.ok(&["exec", "pdonor", "readlink", "/proc/self/ns/pid"]);
    let mut runtimes = vec!["berth"];
    if crate::util::require_tool("runc") {
        runtimes.push("runc");
    }
    for runtime in runtimes {
        let joined = b.ok(&[
            "run",
            "--rm",
            "--runtime",
            runtime,
            "--pid",
            "container:pdonor",
            "busybox",
            "sh",
            "-c",
            "readlink /proc/self/ns/pid; ps -o pid,args",
        ]);
        assert!(joined.starts_with(&donor_ns) && joined.contains("    1 sleep 3911"), "{runtime}: {joined}");
    }
    b.ok(&["rm", "-f", "pdonor"]);
}

/// Outside a PID namespace of its own, a container is its cgroup, as docker's.
#[test]
fn a_container_in_a_shared_pid_namespace_is_its_cgroup_as_dockers() {
    let Some(b) = setup() else { return };
    b.ok(&["run", "-d", "--name", "pdonor", "busybox", "sh", "-c", "exec sleep 3911"]);
    // In the host's namespace, the container's processes are its cgroup's: `top` lists them
    // and no other, `stop` ends them all (the orphaned `sleep 302` too), and `--init` reaps
    // the command's orphans as PID 1 would.
    b.ok(&["run", "-d", "--name", "hostpid", "--pid", "host", "busybox", "sh", "-c", "sleep 3912 & exec sleep 3913"]);
    std::thread::sleep(Duration::from_millis(300));
    let top = b.ok(&["top", "hostpid", "-o", "pid,args"]);
    assert!(top.contains("sleep 3912") && top.contains("sleep 3913"), "{top}");
    assert!(!top.contains("sleep 3911") && top.lines().count() == 3, "only its own: {top}");
    // And the donor's lists its own, not its joiners' (docker lists a container's cgroup).
    let mut joiner = b.cmd(&["run", "--rm", "--pid", "container:pdonor", "busybox", "sleep", "3914"]).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let top = b.ok(&["top", "pdonor", "-o", "pid,args"]);
    assert!(top.contains("sleep 3911") && !top.contains("sleep 3914"), "{top}");
    let _ = joiner.kill();
    let _ = joiner.wait();
    assert_eq!(inspect(&b, "hostpid", "{{.HostConfig.PidMode}}"), "host");
    b.ok(&["stop", "-t", "1", "hostpid"]);
    assert!(running("sleep 3912").is_empty(), "stop ended every process of the container");
    // A foreground run returns when its first process ends, its orphans ended with it
    // (they held its output open: found by a review), under runc too.
    let mut runtimes = vec!["berth"];
    if crate::util::require_tool("runc") {
        runtimes.push("runc");
    }
    for runtime in runtimes {
        let mut run = b
            .cmd(&[
                "run",
                "--name",
                "fgpid",
                "--runtime",
                runtime,
                "--pid",
                "host",
                "busybox",
                "sh",
                "-c",
                "sleep 3915 & echo hi",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while run.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let ended = run.try_wait().unwrap();
        let _ = run.kill();
        assert!(ended.is_some_and(|s| s.success()), "{runtime}: the run ended with its first process: {ended:?}");
        assert!(running("sleep 3915").is_empty(), "{runtime}: its orphan was ended");
        b.ok(&["rm", "fgpid"]);
    }
    let reaped = b.ok(&[
        "run",
        "--rm",
        "--init",
        "--pid",
        "host",
        "busybox",
        "sh",
        "-c",
        "(sleep 3916 &); sleep 0.3; echo $PPID; ps -o ppid,args | grep '[s]leep 3916$'",
    ]);
    let (init, orphan) = reaped.split_once('\n').unwrap();
    assert_eq!(orphan.split_whitespace().next(), Some(init), "the orphan is the init's: {reaped}");
    // Recorded as docker records them.
    let id = inspect(&b, "pdonor", "{{.Id}}");
    b.ok(&["create", "--name", "pjoiner", "--pid", "container:pdonor", "--uts", "host", "busybox", "true"]);
    let modes =
        "[{{.HostConfig.PidMode}}|{{.HostConfig.UTSMode}}|{{.HostConfig.CgroupnsMode}}|{{.HostConfig.UsernsMode}}]";
    assert_eq!(inspect(&b, "pjoiner", modes), format!("[container:{id}|host|private|]"));
    assert_eq!(inspect(&b, "pdonor", modes), "[||private|]");
    // Refused as docker refuses them, before anything runs.
    b.ok(&["create", "--name", "pidle", "busybox", "true"]);
    for (args, why) in [
        (&["--pid", "bogus"][..], "--pid: invalid PID mode"),
        (&["--uts", "bogus"], "--uts: invalid UTS mode"),
        (&["--cgroupns", "bogus"], "--cgroupns: invalid CGROUP mode"),
        (&["--userns", "bogus"], "--userns: invalid USER mode"),
        (&["--uts", "host", "--hostname", "box"], "conflicting options: hostname and the UTS mode"),
        (&["--pid", "container:pidle"], "cannot join PID of a non running container: pidle"),
        (&["--pid", "container:"], "the name or ID of a container is missing"),
        (&["--pid", "host", "--runtime", "crun"], "crun does not end a container without a PID namespace"),
    ] {
        let full = [&["run", "--rm"][..], args, &["busybox", "true"]].concat();
        let out = b.output(&full);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.code() == Some(125) && err.contains(why), "{args:?}: {err}");
    }
    // Made while its donor ran, started after it stopped: refused at the start.
    b.ok(&["stop", "-t", "0", "pdonor"]);
    let err = b.fails(&["start", "pjoiner"]);
    assert!(err.contains("cannot join PID of a non running container"), "{err}");
    b.ok(&["rm", "-f", "pdonor", "pjoiner", "pidle", "hostpid"]);
}

#[test]
fn pause_freezes_every_process_and_unpause_thaws_them_as_dockers() {
    let Some(b) = setup() else { return };
    let out = tempfile::tempdir().unwrap();
    let volume = format!("{}:/out", out.path().display());
    // Two processes count, the first process and its child; SIGTERM ends it with 3.
    let script = "trap 'exit 3' TERM; (i=0; while true; do i=$((i+1)); echo $i > /out/child; sleep 0.02; done) & \
                  i=0; while true; do i=$((i+1)); echo $i > /out/main; sleep 0.02; done";
    b.ok(&["run", "-d", "--name", "frozen", "-v", &volume, "busybox", "sh", "-c", script]);
    let count =
        |f: &str| std::fs::read_to_string(out.path().join(f)).unwrap_or_default().trim().parse::<u64>().unwrap_or(0);
    let both = || (count("main"), count("child"));
    // Until both counters pass `past` (at most 30 s).
    let counting = |past: (u64, u64)| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while (both().0 <= past.0 + 2 || both().1 <= past.1 + 2) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let now = both();
        assert!(now.0 > past.0 + 2 && now.1 > past.1 + 2, "both processes count: {now:?} after {past:?}");
    };
    counting((0, 0));
    assert_eq!(b.ok(&["pause", "frozen"]), "frozen\n");
    let at_pause = both();
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(both(), at_pause, "neither process ran while paused");
    let status = "{{.State.Status}} {{.State.Running}} {{.State.Paused}}";
    assert_eq!(inspect(&b, "frozen", status), "paused true true");
    let ps = b.ok(&["ps", "--filter", "status=paused", "--format", "{{.Names}} {{.Status}}"]);
    assert!(ps.starts_with("frozen Up ") && ps.trim_end().ends_with("(Paused)"), "{ps}");
    for (args, why) in [
        (&["pause", "frozen"][..], "is already paused"),
        (&["exec", "frozen", "true"], "unpause the container before exec"),
        (&["start", "frozen"], "try unpause instead"),
    ] {
        let err = b.fails(args);
        assert!(err.contains(why), "{args:?}: {err}");
    }
    // A signal other than its stop signal or SIGKILL waits, pending, as docker's.
    b.ok(&["kill", "-s", "USR1", "frozen"]);
    assert_eq!(inspect(&b, "frozen", status), "paused true true");
    assert_eq!(b.ok(&["container", "unpause", "frozen"]), "frozen\n");
    counting(both());
    assert_eq!(inspect(&b, "frozen", status), "running true false");
    let err = b.fails(&["unpause", "frozen"]);
    assert!(err.contains("is not paused"), "{err}");
    // `commit` pauses a running container while it reads it, and leaves it as it found it.
    b.ok(&["commit", "frozen", "frozen-img:1"]);
    assert_eq!(inspect(&b, "frozen", status), "running true false");
    b.ok(&["pause", "frozen"]);
    b.ok(&["commit", "frozen", "frozen-img:2"]);
    assert_eq!(inspect(&b, "frozen", status), "paused true true");
    let info = b.ok(&["info", "--format", "{{.ContainersPaused}} {{.ContainersRunning}}"]);
    assert!(info.starts_with("1 "), "info counts it paused: {info}");
    b.ok(&["unpause", "frozen"]);
    b.ok(&["rmi", "frozen-img:1", "frozen-img:2"]);
    // Stopped while paused, it is thawed after the stop signal, which its trap then takes,
    // as docker's.
    b.ok(&["pause", "frozen"]);
    b.ok(&["stop", "frozen"]);
    assert_eq!(inspect(&b, "frozen", "{{.State.Status}} {{.State.ExitCode}} {{.State.Paused}}"), "exited 3 false");
    let err = b.fails(&["pause", "frozen"]);
    assert!(err.contains("is not running"), "{err}");
    // And `rm -f` of a paused one.
    b.ok(&["start", "frozen"]);
    b.ok(&["pause", "frozen"]);
    b.ok(&["rm", "-f", "frozen"]);
}
