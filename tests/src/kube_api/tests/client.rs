//! A raw HTTP/1.1 client for the fake's unit tests: requests on one keep-alive connection,
//! responses read byte by byte, chunked watch streams event by event.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

use super::super::FakeKubeApi;
use super::super::serve::find;

pub(super) const WAIT: Duration = Duration::from_secs(5);

/// A raw HTTP/1.1 client on one keep-alive connection.
pub(super) struct Client {
    stream: TcpStream,
    buffer: Vec<u8>,
}

/// The status line and framing of a response.
pub(super) struct Head {
    pub(super) code: u16,
    pub(super) chunked: bool,
    length: usize,
}

impl Client {
    pub(super) fn new(api: &FakeKubeApi) -> Self {
        let stream = TcpStream::connect(api.addr()).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        Self {
            stream,
            buffer: Vec::new(),
        }
    }

    fn fill(&mut self) {
        let mut chunk = [0u8; 4096];
        let n = self
            .stream
            .read(&mut chunk)
            .expect("read from the fake API");
        assert!(n > 0, "the fake API closed the connection");
        self.buffer.extend_from_slice(&chunk[..n]);
    }

    fn line(&mut self) -> String {
        loop {
            if let Some(at) = find(&self.buffer, b"\r\n") {
                let line = String::from_utf8(self.buffer[..at].to_vec()).unwrap();
                self.buffer.drain(..at + 2);
                return line;
            }
            self.fill();
        }
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        while self.buffer.len() < n {
            self.fill();
        }
        self.buffer.drain(..n).collect()
    }

    pub(super) fn send(&mut self, target: &str) -> Head {
        let request =
            format!("GET {target} HTTP/1.1\r\nHost: fake\r\nAccept: application/json\r\n\r\n");
        self.stream.write_all(request.as_bytes()).unwrap();
        let status = self.line();
        let code = status.split(' ').nth(1).unwrap().parse().unwrap();
        let (mut chunked, mut length) = (false, 0);
        loop {
            let line = self.line().to_ascii_lowercase();
            if line.is_empty() {
                break;
            }
            if line == "transfer-encoding: chunked" {
                chunked = true;
            }
            if let Some(n) = line.strip_prefix("content-length: ") {
                length = n.parse().unwrap();
            }
        }
        Head {
            code,
            chunked,
            length,
        }
    }

    pub(super) fn get(&mut self, target: &str) -> (u16, Value) {
        let head = self.send(target);
        assert!(!head.chunked, "{target} answered chunked");
        let body = self.bytes(head.length);
        (head.code, serde_json::from_slice(&body).unwrap())
    }

    /// The next chunk of a chunked body; None at the terminal chunk.
    pub(super) fn chunk(&mut self) -> Option<Value> {
        let size = usize::from_str_radix(&self.line(), 16).unwrap();
        let data = self.bytes(size);
        assert_eq!(self.line(), "", "chunk not terminated by CRLF");
        if size == 0 {
            return None;
        }
        let text = String::from_utf8(data).unwrap();
        assert!(text.ends_with('\n'), "an event is one line: {text:?}");
        Some(serde_json::from_str(&text).unwrap())
    }

    /// The next event's type, object name and resourceVersion.
    pub(super) fn event(&mut self) -> (String, String, u64) {
        let event = self.chunk().expect("an event, not the end of the watch");
        let object = &event["object"];
        let rv = object["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        (event["type"].as_str().unwrap().to_owned(), name, rv)
    }
}
