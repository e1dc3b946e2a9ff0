//! `query serve`, the console, run as a child process for a test.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// `query serve` on a free port; killed on drop.
pub struct Console {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    token: String,
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Console {
    /// Starts `query serve --store STORE` on a free loopback port with `token`; the campaign
    /// and postback URLs it shows start with `edge_url`.
    pub fn start(store: &str, token: &str, edge_url: &str) -> Console {
        let mut child = Command::new(crate::query_bin())
            .args(["serve", "--store", store, "--listen", "127.0.0.1:0"])
            .args(["--edge-url", edge_url])
            .env("QUERY_TOKEN", token)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start query serve");
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        err.read_line(&mut line).unwrap();
        let Some(rest) = line.split("serving http://").nth(1) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("query serve did not start: {line}");
        };
        let addr = rest.split('/').next().unwrap().to_owned();
        Console {
            child,
            addr,
            token: token.to_owned(),
        }
    }

    /// A request with the token and extra header lines; the status and the body as JSON.
    pub fn call_with(
        &self,
        method: &str,
        path: &str,
        headers: &[&str],
        body: &str,
    ) -> (u16, serde_json::Value) {
        let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
        let (status, body) = self.raw(method, path, Some(&self.token), &extra, body);
        (
            status,
            serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)),
        )
    }

    /// One request; the status and the body.
    pub fn call(&self, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
        self.raw(method, path, token, "", body)
    }

    fn raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        extra: &str,
        body: &str,
    ) -> (u16, String) {
        let mut s = TcpStream::connect(&self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: c\r\n{auth}{extra}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        let raw = String::from_utf8(raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        let status = head[9..12].parse().unwrap();
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_owned()
        };
        (status, body)
    }

    /// A request with the token; the status and the body as JSON (a string when not JSON).
    pub fn api(&self, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
        let (status, body) = self.call(method, path, Some(&self.token), body);
        let v = if body.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body))
        };
        (status, v)
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n").unwrap();
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
}

/// Where the browser is: `$CHROMIUM` and `$CHROMEDRIVER`, else Debian's `chromium` and
/// `chromium-driver` (installed with apt-get when missing and this runs as root), and
/// Selenium from PyPI (installed when missing).
pub fn ensure_browser() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let driver = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
    let present =
        || std::path::Path::new(&chromium).exists() && std::path::Path::new(&driver).exists();
    let root = || {
        Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
    };
    if !present() && root() {
        let st = Command::new("sh")
            .args([
                "-c",
                "apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
                 apt-get install -y -qq chromium chromium-driver >/dev/null",
            ])
            .status();
        assert!(
            st.is_ok_and(|s| s.success()),
            "apt-get install chromium chromium-driver failed"
        );
    }
    assert!(
        present(),
        "this test needs Chromium and its driver at {chromium} and {driver}: \
         apt-get install chromium chromium-driver (or set CHROMIUM and CHROMEDRIVER)"
    );
    let have = || {
        Command::new("python3")
            .args(["-c", "import selenium"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !have() {
        let _ = Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "selenium"])
            .status();
    }
    assert!(
        have(),
        "this test needs Selenium: python3 -m pip install selenium"
    );
}
