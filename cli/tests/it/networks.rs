//! User-defined networks: `berth network create|ls|inspect|rm|prune`, `run --network NAME`
//! with `--network-alias`, the resolver at 127.0.0.11 that gives containers each other's
//! names and forwards the rest (to `--dns` servers, here a name server the test runs), the
//! isolation between berth's bridges, and `--internal`.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use crate::util::{container_store as setup, Berth, Outside};

/// A detached busybox httpd named `name` on `network` serving /etc (so `/hostname` is its
/// host name), with `extra` flags before the image.
fn serve(b: &Berth, name: &str, network: &str, extra: &[&str]) -> String {
    let mut args = vec!["run", "-d", "--wait", "--name", name, "--network", network];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["busybox", "httpd", "-f", "-p", "8080", "-h", "/etc"]);
    b.ok(&args).trim().to_owned()
}

/// Runs `sh -c script` in a throwaway container on `network`; (success, stdout + stderr).
fn sh(b: &Berth, network: &str, extra: &[&str], script: &str) -> (bool, String) {
    let mut args = vec!["run", "--rm", "--network", network];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["busybox", "sh", "-c", script]);
    let out = b.output(&args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// A name server on the host at `ip`:53 that answers every A query with 192.0.2.77, as an
/// upstream the containers' resolver forwards to; it counts the queries it answered.
fn upstream(ip: &str) -> (std::sync::Arc<std::sync::atomic::AtomicUsize>, Duration) {
    let sock = UdpSocket::bind((ip, 53)).expect("bind the test's name server");
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, peer)) = sock.recv_from(&mut buf) {
            // The header with QR and RA set and one answer; the question as asked, then a
            // pointer to its name, type A, class IN, TTL 60, 4 bytes of address.
            let mut reply = buf[..n].to_vec();
            reply[2] |= 0x80;
            reply[3] = 0x80;
            reply[6..8].copy_from_slice(&1u16.to_be_bytes());
            reply[8..12].fill(0);
            let question_end = 12 + reply[12..].iter().position(|b| *b == 0).unwrap() + 5;
            reply.truncate(question_end);
            reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 77]);
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = sock.send_to(&reply, peer);
        }
    });
    (count, Duration::from_secs(5))
}

#[test]
fn containers_on_a_user_defined_network_reach_each_other_by_name_and_alias() {
    let Some(b) = setup() else { return };
    let id = b.ok(&["network", "create", "ci"]).trim().to_owned();
    assert_eq!(id.len(), 64, "a network ID: {id}");
    let ls = b.ok(&["network", "ls"]);
    assert!(ls.starts_with("NETWORK ID     NAME      DRIVER    SCOPE\n"), "{ls}");
    assert!(ls.contains(&format!("{}   ci        bridge    local\n", &id[..12])), "{ls}");
    let subnet = b.ok(&["network", "inspect", "-f", "{{range .IPAM.Config}}{{.Subnet}} {{.Gateway}}{{end}}", "ci"]);
    assert!(subnet.starts_with("10.9") && subnet.trim().ends_with(".1"), "{subnet}");

    let db = serve(&b, "db", "ci", &["--network-alias", "database", "--hostname", "db-host"]);
    let ip = b.ok(&["inspect", "-f", "{{.NetworkSettings.Networks.ci.IPAddress}}", "db"]);
    assert!(ip.starts_with(subnet.split('.').take(3).collect::<Vec<_>>().join(".").as_str()), "{ip} in {subnet}");
    let aliases = b.ok(&["inspect", "-f", "{{json .NetworkSettings.Networks.ci.Aliases}}", "db"]);
    assert_eq!(aliases.trim(), format!("[\"database\",\"{}\",\"db-host\"]", &db[..12]), "docker's order");
    assert_eq!(
        b.ok(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", "db"]),
        "\n",
        "docker's: only the default bridge's"
    );
    // ps filters on the network, by name or ID, as docker's.
    assert_eq!(b.ok(&["ps", "-q", "--no-trunc", "--filter", "network=ci"]).trim(), db);
    assert_eq!(b.ok(&["ps", "-q", "--no-trunc", "--filter", &format!("network={}", &id[..12])]).trim(), db);
    assert_eq!(b.ok(&["ps", "-q", "--filter", "network=bridge"]), "");
    let members = b.ok(&["network", "inspect", "-f", "{{range .Containers}}{{.Name}} {{.IPv4Address}}{{end}}", "ci"]);
    assert_eq!(members.trim(), format!("db {}/24", ip.trim()));

    // By its name, its alias, its short ID, its host name and NAME.NETWORK; the resolver is
    // docker's 127.0.0.11.
    let script = format!(
        "cat /etc/resolv.conf; for n in db database {} db-host db.ci; do wget -q -O - http://$n:8080/hostname; done",
        &db[..12]
    );
    let (ok, out) = sh(&b, "ci", &[], &script);
    assert!(ok, "{out}");
    assert!(out.contains("nameserver 127.0.0.11\n") && out.contains("options ndots:0"), "{out}");
    assert!(out.ends_with(&"db-host\n".repeat(5)), "{out}");
    // A reverse lookup of its address names it, as docker's resolver does.
    let (ok, out) = sh(&b, "ci", &[], &format!("nslookup {}", ip.trim()));
    assert!(ok && out.contains("name = db.ci"), "{out}");
    // Two replicas behind one alias: both addresses, as docker's round robin.
    serve(&b, "replica", "ci", &["--network-alias", "database"]);
    let (ok, out) = sh(&b, "ci", &[], "nslookup -type=a database");
    let replica = b.ok(&["inspect", "-f", "{{.NetworkSettings.Networks.ci.IPAddress}}", "replica"]);
    assert!(ok && out.contains(ip.trim()) && out.contains(replica.trim()), "{out}");
    // Names are case-insensitive, as DNS is.
    let (ok, out) = sh(&b, "ci", &[], "nslookup DB 127.0.0.11");
    assert!(ok && out.contains(ip.trim()), "{out}");

    // A named foreground container is on the network too: its address recorded, its name served.
    let mut fg = b.cmd(&["run", "--network", "ci", "--name", "fg", "busybox", "sleep", "30"]).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let fg_ip = loop {
        let out = b.output(&["inspect", "-f", "{{.NetworkSettings.Networks.ci.IPAddress}}", "fg"]);
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if !text.is_empty() || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(fg_ip.starts_with("10.9"), "{fg_ip:?}");
    let (ok, out) = sh(&b, "ci", &[], "ping -c 1 -W 2 fg");
    assert!(ok && out.contains(&format!("({fg_ip})")), "{out}");
    b.ok(&["kill", "fg"]);
    let _ = fg.wait();
}

#[test]
fn unknown_names_go_to_the_dns_servers_given_and_a_stopped_container_is_forgotten() {
    let Some(b) = setup() else { return };
    let (queries, _) = upstream("127.0.0.77");
    b.ok(&["network", "create", "fwd"]);
    serve(&b, "web", "fwd", &[]);
    let dns = ["--dns", "127.0.0.77"];
    // The container keeps the network's resolver; the resolver forwards from the host,
    // where the given server is (a loopback address of the host's, unreachable from inside).
    let (ok, out) = sh(&b, "fwd", &dns, "cat /etc/resolv.conf; nslookup -type=a example.test; nslookup -type=a web");
    assert!(ok, "{out}");
    assert!(out.starts_with("nameserver 127.0.0.11\noptions ndots:0\n"), "{out}");
    assert!(out.contains("Name:\texample.test\nAddress: 192.0.2.77"), "forwarded: {out}");
    assert!(!out.contains("Name:\tweb\nAddress: 192.0.2.77"), "the container's own name is not forwarded: {out}");
    let forwarded = queries.load(std::sync::atomic::Ordering::SeqCst);
    assert!(forwarded >= 1);

    // An internal network's resolver forwards nothing: no name leaves it, not even as a query.
    b.ok(&["network", "create", "--internal", "sealed"]);
    let (ok, out) = sh(&b, "sealed", &dns, "nslookup -type=a example.test");
    assert!(!ok && !out.contains("192.0.2.77"), "{out}");
    assert_eq!(queries.load(std::sync::atomic::Ordering::SeqCst), forwarded, "the upstream was asked");

    // Once `web` stops, its name is no longer the network's: the query goes upstream.
    b.ok(&["stop", "web"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    let out = loop {
        let (_, out) = sh(&b, "fwd", &dns, "nslookup -type=a web");
        if out.contains("192.0.2.77") || Instant::now() > deadline {
            break out;
        }
    };
    assert!(out.contains("Address: 192.0.2.77"), "{out}");

    // On the default bridge, --dns, --dns-search and --dns-option write resolv.conf itself.
    let flags = ["--dns", "192.0.2.53", "--dns-search", "corp.test", "--dns-option", "ndots:2"];
    let (ok, out) = sh(&b, "bridge", &flags, "cat /etc/resolv.conf");
    assert!(ok, "{out}");
    assert_eq!(out, "search corp.test\nnameserver 192.0.2.53\noptions ndots:2\n");
}

#[test]
fn a_user_defined_network_is_isolated_from_berths_other_bridges_and_internal_has_no_way_out() {
    let Some(b) = setup() else { return };
    b.ok(&["network", "create", "front"]);
    b.ok(&["network", "create", "--internal", "sealed"]);
    serve(&b, "api", "front", &[]);
    let ip = b.ok(&["inspect", "-f", "{{.NetworkSettings.Networks.front.IPAddress}}", "api"]).trim().to_owned();
    // The host reaches it (published ports go this way); a container on berth0 or on another
    // network does not.
    let (ok, out) = sh(&b, "front", &[], &format!("wget -q -O - http://{ip}:8080/hostname"));
    assert!(ok, "same network: {out}");
    for other in ["bridge", "sealed"] {
        let (ok, out) = sh(&b, other, &[], &format!("nc -w 2 {ip} 8080 </dev/null && echo reached"));
        assert!(!ok && !out.contains("reached"), "from {other}: {out}");
    }
    // Out through NAT from a plain network; nothing leaves an internal one.
    let outside = Outside::make(9);
    let server = outside.serve_once();
    let (ok, out) = sh(&b, "front", &[], "nc 10.91.9.1 9000");
    server.join().unwrap();
    assert!(ok && out == "peer=10.91.9.2\n", "{out}");
    let (ok, out) = sh(&b, "sealed", &[], "nc -w 2 10.91.9.1 9000 </dev/null && echo reached");
    assert!(!ok && !out.contains("reached"), "{out}");
}

#[test]
fn network_commands_refuse_bad_input_and_networks_in_use_as_docker() {
    let Some(b) = setup() else { return };
    let err = b.fails(&["network", "create", "bridge"]);
    assert!(err.contains("already exists"), "{err}");
    let err = b.fails(&["network", "create", "bad/name"]);
    assert!(err.contains("invalid network name"), "{err}");
    let err = b.fails(&["network", "create", "--subnet", "10.93.1.0/16", "n1"]);
    assert!(err.contains("did you mean 10.93.0.0/16"), "{err}");
    b.ok(&["network", "create", "--subnet", "10.97.0.0/16", "--gateway", "10.97.5.5", "--label", "team=qa", "n1"]);
    let err = b.fails(&["network", "create", "n1"]);
    assert!(err.contains("network with name n1 already exists"), "{err}");
    let err = b.fails(&["network", "create", "--subnet", "10.97.3.0/24", "n2"]);
    assert!(err.contains("overlaps"), "{err}");
    let gw = b.ok(&["network", "inspect", "-f", "{{range .IPAM.Config}}{{.Gateway}}{{end}} {{.Labels.team}}", "n1"]);
    assert_eq!(gw, "10.97.5.5 qa\n");
    assert_eq!(b.ok(&["network", "ls", "-q", "--filter", "label=team=qa"]).lines().count(), 1);

    // run: a network that does not exist, aliases off a user-defined network (exit 125).
    let out = b.output(&["run", "--rm", "--network", "nope", "busybox", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("network nope not found"));
    let err = b.fails(&["run", "--rm", "--network-alias", "x", "busybox", "true"]);
    assert!(err.contains("user-defined networks"), "{err}");

    // rm: refused while a container runs on it, with its name; done after; the bridge goes.
    let id = b.ok(&["network", "inspect", "-f", "{{.Id}}", "n1"]).trim().to_owned();
    serve(&b, "busy", "n1", &[]);
    let err = b.fails(&["network", "rm", "n1"]);
    assert!(err.contains("container busy is attached"), "{err}");
    assert!(b.fails(&["network", "rm", "bridge"]).contains("pre-defined"));
    b.ok(&["rm", "-f", "busy"]);
    assert_eq!(b.ok(&["network", "rm", "n1"]), "n1\n");
    let dev = std::fs::read_to_string("/proc/self/net/dev").unwrap();
    assert!(!dev.contains(&format!("berth-{}:", &id[..9])), "the bridge is gone: {dev}");
    let tables = std::process::Command::new("nft").args(["list", "tables"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&tables.stdout).contains(&format!("berth_{}", &id[..9])), "its nft table too");
    assert!(b.fails(&["network", "rm", "n1"]).contains("network n1 not found"));

    // A stopped container is on the network it was made on: one made again under its name
    // is another (its start fails, as docker's); prune removes a network only stopped
    // containers are on.
    b.ok(&["network", "create", "n3"]);
    let old = b.ok(&["network", "inspect", "-f", "{{.Id}}", "n3"]).trim().to_owned();
    b.ok(&["run", "--network", "n3", "--name", "stopped", "busybox", "true"]);
    b.ok(&["network", "rm", "n3"]);
    b.ok(&["network", "create", "n3"]);
    assert!(b.fails(&["start", "stopped"]).contains(&format!("network {old} not found")));
    assert_eq!(b.ok(&["network", "prune", "-f"]), "Deleted Networks:\nn3\n\n");
    let asked = b.cmd(&["network", "prune"]).stdin(std::process::Stdio::null()).output().unwrap();
    assert!(asked.status.success() && asked.stdout.is_empty(), "no answer is no");
    b.ok(&["network", "rm", "-f", "n1"]);
    let out = b.output(&["network", "inspect", "n1"]);
    assert!(!out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "[]\n");
}

#[test]
fn network_container_joins_a_running_containers_namespace_as_a_sidecar() {
    let Some(b) = setup() else { return };
    let web = serve(&b, "web", "bridge", &[]);
    let script = "wget -qO- http://127.0.0.1:8080/hostname; hostname; grep -c 10.90. /etc/hosts";
    let mut runtimes = vec!["berth"];
    runtimes.extend(["runc"].into_iter().filter(|r| crate::util::require_tool(r)));
    for runtime in runtimes {
        // Its loopback is the other container's: the service answers on 127.0.0.1, and the
        // host name and /etc/hosts are that container's, as docker shares them.
        let (ok, out) = sh(&b, "container:web", &["--runtime", runtime], script);
        assert!(ok, "under {runtime}: {out}");
        assert_eq!(out, format!("{0}\n{0}\n1\n", &web[..12]), "under {runtime}");
    }
    // A detached sidecar: no address of its own, and it needs the other one running to start.
    b.ok(&["run", "-d", "--name", "side", "--network", "container:web", "busybox", "sleep", "60"]);
    let shown = b.ok(&["inspect", "-f", "{{.HostConfig.NetworkMode}} [{{.NetworkSettings.IPAddress}}]", "side"]);
    assert_eq!(shown.trim(), format!("container:{web} []"));
    assert_eq!(b.ok(&["ps", "--filter", "name=side", "--format", "[{{.Networks}}]"]), "[]\n", "none of its own");
    assert_eq!(b.ok(&["exec", "side", "wget", "-qO-", "http://127.0.0.1:8080/hostname"]).trim(), &web[..12]);
    // The other container stops: its address goes back to the pool, and its interface
    // leaves the namespace the sidecar still holds (before, a new container got the same
    // address while the old eth0 still answered to it).
    b.ok(&["stop", "-t", "0", "web"]);
    assert_eq!(b.ok(&["exec", "side", "sh", "-c", "ls /sys/class/net | tr '\\n' ' '"]), "lo ");
    b.ok(&["stop", "-t", "0", "side"]);
    let err = b.fails(&["start", "side"]);
    assert!(err.contains("cannot join network of a non running container"), "{err}");
    b.ok(&["start", "web"]);
    b.ok(&["start", "side"]);
    assert_eq!(b.ok(&["exec", "side", "wget", "-qO-", "http://127.0.0.1:8080/hostname"]).trim(), &web[..12]);
    // What the other container's network decides is refused, with docker's words.
    for (flags, why) in [
        (&["-d", "-p", "9000:80"][..], "port publishing and the container type network mode"),
        (&["--hostname", "h"][..], "hostname and the network mode"),
        (&["--add-host", "a:10.0.0.1"][..], "custom host-to-IP mapping and the network mode"),
        (&["--dns", "10.0.0.1"][..], "dns and the network mode"),
    ] {
        let mut args = vec!["run", "--rm", "--network", "container:web"];
        args.extend_from_slice(flags);
        args.extend(["busybox", "true"]);
        let out = b.output(&args);
        assert_eq!(out.status.code(), Some(125), "{flags:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(why), "{flags:?}");
    }
    let out = b.output(&["run", "--rm", "--network", "container:nosuch", "busybox", "true"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such container: nosuch"));
    b.ok(&["rm", "-f", "side", "web"]);
}

/// docker's `rename`: the new name is the container's everywhere at once, its network's
/// resolver included while it runs; the old name is free again, a taken one is refused.
#[test]
fn rename_moves_a_running_containers_name_on_its_network() {
    let Some(b) = setup() else { return };
    b.ok(&["network", "create", "ren"]);
    let id = serve(&b, "before", "ren", &[]);
    let (ok, out) = sh(&b, "ren", &[], "nslookup -type=a before");
    assert!(ok, "{out}");
    b.ok(&["rename", "before", "after"]);
    assert_eq!(b.ok(&["inspect", "--format", "{{.Name}}", &id[..12]]), "/after\n");
    assert_eq!(b.ok(&["ps", "--format", "{{.Names}}"]), "after\n");
    let (ok, out) = sh(&b, "ren", &[], "nslookup -type=a after");
    assert!(ok, "the new name resolves: {out}");
    let (ok, out) = sh(&b, "ren", &[], "nslookup -type=a before");
    assert!(!ok, "the old one no longer does: {out}");
    b.ok(&["run", "--name", "before", "busybox", "true"]);
    let err = b.fails(&["container", "rename", "before", "after"]);
    assert!(err.contains("after"), "{err}");
    assert!(b.fails(&["rename", "after", "after"]).contains("same name as its current name"));
    b.ok(&["rm", "-f", "after", "before"]);
    b.ok(&["network", "rm", "ren"]);
}
