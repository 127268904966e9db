//! The demo's Prometheus endpoint, scraped over a real HTTP request on
//! loopback while the demo serves it, and its progress lines when stdout is
//! a pipe.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

/// Kills the demo when the test ends, however it ends.
struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the demo on the memory store, serving metrics on `port` and
/// lingering; returns it and its stdout lines as they come.
fn start_demo(port: u16) -> (Demo, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bank-demo"))
        .args([
            "--accounts",
            "10",
            "--commands",
            "2000",
            "--metrics-addr",
            &format!("127.0.0.1:{port}"),
            "--metrics-linger",
            "120",
        ])
        .env_remove("DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    (Demo(child), received)
}

/// One GET of `/metrics`: the status line and the body.
fn scrape(port: u16) -> (String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.lines().next().unwrap_or_default().to_owned();
    (status, body.to_owned())
}

/// Whether a line of the text format is a sample: a metric name, labels
/// in braces, and a number.
fn is_sample_line(line: &str) -> bool {
    let (series, value) = match line.rsplit_once(' ') {
        Some(parts) => parts,
        None => return false,
    };
    let name_end = series.find('{').unwrap_or(series.len());
    let name = &series[..name_end];
    let labels_ok = name_end == series.len() || series.ends_with('}');
    let name_ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
    let value_ok = value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value);
    name_ok && labels_ok && value_ok
}

#[test]
fn the_demo_serves_its_metrics_in_prometheus_text_and_prints_progress_when_piped() {
    // A port taken between choosing and binding makes the demo fail at
    // once; then another port is tried.
    let (demo, lines, port) = (0..5)
        .find_map(|_| {
            let port = free_port();
            let (mut demo, lines) = start_demo(port);
            let first = lines.recv_timeout(Duration::from_secs(120)).ok()?;
            if first.starts_with("metrics: http://") {
                return Some((demo, lines, port));
            }
            let _ = demo.0.wait();
            None
        })
        .expect("the demo serves metrics on a free port");

    let mut seen = Vec::new();
    loop {
        let line = lines
            .recv_timeout(Duration::from_secs(300))
            .unwrap_or_else(|_| panic!("the demo stopped talking; it said: {seen:#?}"));
        let done = line.starts_with("metrics: still served");
        seen.push(line);
        if done {
            break;
        }
    }
    let said = |prefix: &str| seen.iter().any(|l| l.starts_with(prefix));
    assert!(said("CHECK OK"), "{seen:#?}");
    assert!(said("progress: opening accounts: 10/10"), "{seen:#?}");
    assert!(said("progress: workload: 2000/2000 commands"), "{seen:#?}");
    assert!(said("progress: rebuild:"), "{seen:#?}");
    assert!(
        seen.iter()
            .any(|l| l.contains("written by this run, 0 by earlier runs")),
        "{seen:#?}"
    );

    let (status, body) = scrape(port);
    assert!(status.contains(" 200"), "{status}");
    for line in body
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        assert!(
            is_sample_line(line),
            "not a Prometheus sample line: {line:?}"
        );
    }
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let ok: f64 = scrape
        .samples
        .iter()
        .filter(|s| {
            s.metric == eventcore::telemetry::COMMANDS_TOTAL
                && s.labels.get("outcome") == Some("ok")
        })
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(n) | prometheus_parse::Value::Untyped(n) => n,
            _ => 0.0,
        })
        .sum();
    // Two commands open and fund each account, then the workload.
    assert!(ok >= 20.0, "commands counted ok: {ok}\n{body}");
    let names: Vec<&str> = scrape.samples.iter().map(|s| s.metric.as_str()).collect();
    for name in [
        eventcore::telemetry::COMMANDS_TOTAL,
        eventcore::telemetry::COMMAND_DURATION_SECONDS,
        eventcore::telemetry::STORE_OPERATION_DURATION_SECONDS,
        eventcore::telemetry::PROJECTION_EVENTS_TOTAL,
        eventcore::telemetry::PROJECTION_STATE,
        eventcore::telemetry::EVENTS_WRITTEN_TOTAL,
    ] {
        assert!(
            names.iter().any(|n| n.starts_with(name)),
            "{name} is not served:\n{body}"
        );
    }
    println!(
        "scraped {} samples, {ok} commands ok, {} progress lines",
        scrape.samples.len(),
        seen.iter().filter(|l| l.starts_with("progress:")).count()
    );
    drop(demo);
}
