//! A small OTLP/HTTP receiver: accepts `POST /v1/traces` and keeps the raw
//! protobuf bodies, so tests can check that spans were exported. No
//! OpenTelemetry collector can be installed here; this stands in for one.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// `(path, body)` of each request.
type Requests = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

#[derive(Debug, Clone)]
pub struct OtlpReceiver {
    port: u16,
    bodies: Requests,
}

impl OtlpReceiver {
    pub fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let bodies = Requests::default();
        let store = bodies.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let store = store.clone();
                std::thread::spawn(move || serve(stream, &store));
            }
        });
        Ok(Self { port, bodies })
    }

    /// Value for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `(path, body)` of every request received so far.
    pub fn requests(&self) -> Vec<(String, Vec<u8>)> {
        self.bodies.lock().map(|b| b.clone()).unwrap_or_default()
    }
}

fn serve(stream: TcpStream, store: &Mutex<Vec<(String, Vec<u8>)>>) {
    let Ok(mut writer) = stream.try_clone() else { return };
    let mut reader = BufReader::new(stream);
    // Keep-alive: one request after another on the same connection.
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let path = request_line.split_whitespace().nth(1).unwrap_or("").to_owned();
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        if let Ok(mut bodies) = store.lock() {
            bodies.push((path, body));
        }
        let response = "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}
