//! `git://`: protocol v2 spoken to git daemon, so that a `git://` source
//! gets the same one-request polls and the same bounded, streamed fetches
//! as HTTP(S), not libgit2's.
//!
//! Each command opens a connection of its own, as each HTTP request does:
//! the request line asks for `git-upload-pack` with `version=2` as an
//! extra parameter (gitprotocol-pack(5), "Git Transport"); the server's
//! capability advertisement is read, bounded, and must begin `version 2`
//! (gitprotocol-v2(5)); then the command is sent with a flush after it,
//! which ends the session. The answer is complete at its first flush
//! packet (the server closes the connection then, but a forward in between
//! may not pass that on at once), and reads exactly as an HTTP response
//! body does. Apart from the poller, which only picks the transport.

use std::time::{Duration, Instant};

use reqwest::Url;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::pkt::{self, Packet};

/// git daemon's port when the URL names none.
const DEFAULT_PORT: u16 = 9418;

/// The largest capability advertisement read (git's is some 200 bytes).
const MAX_ADVERTISEMENT: usize = 64 * 1024;

/// The bytes read from the connection at once.
const READ_SIZE: usize = 64 * 1024;

/// Where a `git://` repository is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Daemon {
    host: String,
    port: u16,
    path: String,
}

/// How an exchange with git daemon failed.
#[derive(Debug)]
pub(super) enum Failure {
    /// No connection.
    Connect(String),
    /// Silence for longer than allowed, while waiting for `what`.
    Timeout(&'static str),
    /// The connection broke, or the server broke the protocol.
    Transfer(String),
    /// The server said why it refused (an `ERR` packet).
    Server(String),
}

/// The answer to one command, read as it arrives.
pub(super) struct Answer {
    stream: TcpStream,
    io_timeout: Duration,
    until: Instant,
    buf: Vec<u8>,
    framing: Framing,
}

/// Where the answer stands in its pkt-lines: a v2 command's answer ends
/// with its first flush packet (its sections are separated by delimiters),
/// so the answer is complete there, whether or not the server has closed
/// the connection yet (a forward in between may keep it open).
#[derive(Debug, Default, PartialEq, Eq)]
struct Framing {
    /// Payload bytes left in the current packet.
    payload_left: usize,
    /// Length digits of the next packet read so far.
    digits: Vec<u8>,
    /// The closing flush was seen; nothing after it is read.
    ended: bool,
    /// The framing broke: bytes pass through to the parser, which says why,
    /// until the server closes the connection.
    lost: bool,
}

impl Framing {
    /// How many of `bytes` belong to the answer (all of them, unless its
    /// closing flush is among them).
    fn take(&mut self, bytes: &[u8]) -> usize {
        let mut i = 0;
        while i < bytes.len() && !self.ended && !self.lost {
            if self.payload_left > 0 {
                let skip = self.payload_left.min(bytes.len() - i);
                self.payload_left -= skip;
                i += skip;
                continue;
            }
            self.digits.push(bytes[i]);
            i += 1;
            if self.digits.len() < 4 {
                continue;
            }
            let len = std::str::from_utf8(&self.digits)
                .ok()
                .and_then(|d| usize::from_str_radix(d, 16).ok());
            self.digits.clear();
            match len {
                Some(0) => self.ended = true,
                Some(1 | 2) => {}
                Some(len) if len > 4 => self.payload_left = len - 4,
                _ => self.lost = true,
            }
        }
        if self.lost { bytes.len() } else { i }
    }
}

impl Daemon {
    /// The daemon and repository a `git://` URL names.
    pub(super) fn new(url: &Url) -> Result<Self, String> {
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or("a git:// URL needs a host")?;
        // The daemon takes the path as it is on disk: `%20` is a space.
        let path = super::percent_decode(url.path());
        if path.is_empty() || path == "/" {
            return Err("a git:// URL needs the repository's path".into());
        }
        if path.bytes().any(|b| b == 0 || b == b'\n') {
            return Err("the repository's path holds a NUL or a newline".into());
        }
        Ok(Self {
            host: host.to_owned(),
            port: url.port().unwrap_or(DEFAULT_PORT),
            path,
        })
    }

    /// The request line: `git-upload-pack PATH\0host=HOST\0\0version=2\0`.
    fn request_line(&self) -> Result<Vec<u8>, String> {
        let host = if self.port == DEFAULT_PORT {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        };
        let mut out = Vec::new();
        pkt::write_data(
            &mut out,
            &[
                b"git-upload-pack ",
                self.path.as_bytes(),
                b"\0host=",
                host.as_bytes(),
                b"\0\0version=2\0",
            ],
        )
        .map_err(|e| e.to_string())?;
        Ok(out)
    }

    /// Connects, asks for protocol v2 and sends `body` (one command);
    /// `Ok(Err(why))` when the server does not speak v2. The whole
    /// exchange must end within `deadline`, and the server may be silent
    /// for at most `io_timeout` at a time.
    pub(super) async fn command(
        &self,
        body: &[u8],
        connect_timeout: Duration,
        io_timeout: Duration,
        deadline: Duration,
    ) -> Result<Result<Answer, String>, Failure> {
        let until = Instant::now() + deadline;
        let request = self.request_line().map_err(Failure::Transfer)?;
        // An IPv6 address is written in brackets in the URL (and so in the
        // request's host=), bare for the resolver.
        let bare = self.host.trim_start_matches('[').trim_end_matches(']');
        let connect = TcpStream::connect((bare, self.port));
        let stream = match tokio::time::timeout(connect_timeout.min(deadline), connect).await {
            Err(_) => return Err(Failure::Timeout("the connection")),
            Ok(Err(e)) => return Err(Failure::Connect(e.to_string())),
            Ok(Ok(stream)) => stream,
        };
        let _ = stream.set_nodelay(true);
        let mut answer = Answer {
            stream,
            io_timeout,
            until,
            buf: vec![0; READ_SIZE],
            framing: Framing::default(),
        };
        answer.send(&request).await?;
        let format = match answer.advertisement().await? {
            Ok(format) => format,
            Err(why) => return Ok(Err(why)),
        };
        // A command in another object format than the repository's is
        // refused by upload-pack: let the poller learn the format instead.
        let asked = if contains(body, b"object-format=sha256\n") {
            "sha256"
        } else {
            "sha1"
        };
        if format != asked {
            return Ok(Err(format!("the repository's object format is {format}")));
        }
        let mut command = body.to_vec();
        pkt::write_flush(&mut command);
        answer.send(&command).await?;
        Ok(Ok(answer))
    }
}

impl Answer {
    /// The next bytes of the answer; `None` once its closing flush has
    /// passed, or the server has closed the connection.
    pub(super) async fn chunk(&mut self) -> Result<Option<Vec<u8>>, Failure> {
        if self.framing.ended {
            return Ok(None);
        }
        let n = self.read("the answer").await?;
        let taken = self.framing.take(&self.buf[..n]);
        Ok((n > 0).then(|| self.buf[..taken].to_vec()))
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        let wait = self.wait();
        match tokio::time::timeout(wait, self.stream.write_all(bytes)).await {
            Err(_) => Err(Failure::Timeout("the server to take the request")),
            Ok(Err(e)) => Err(Failure::Transfer(e.to_string())),
            Ok(Ok(())) => Ok(()),
        }
    }

    /// Reads what has arrived into the buffer, waiting at most the I/O
    /// timeout (and never past the deadline); 0 at the end.
    async fn read(&mut self, what: &'static str) -> Result<usize, Failure> {
        let wait = self.wait();
        match tokio::time::timeout(wait, self.stream.read(&mut self.buf)).await {
            Err(_) => Err(Failure::Timeout(what)),
            Ok(Err(e)) => Err(Failure::Transfer(e.to_string())),
            Ok(Ok(n)) => Ok(n),
        }
    }

    fn wait(&self) -> Duration {
        self.io_timeout
            .min(self.until.saturating_duration_since(Instant::now()))
    }

    /// Reads the capability advertisement up to its flush: the object
    /// format it names, or `Ok(Err(why))` when it is not protocol v2's.
    async fn advertisement(&mut self) -> Result<Result<String, String>, Failure> {
        let mut got: Vec<u8> = Vec::new();
        loop {
            match judge_advertisement(&got) {
                Judged::More => {}
                Judged::V2 { format } => return Ok(Ok(format)),
                Judged::NotV2(why) => return Ok(Err(why)),
                Judged::Refused(message) => return Err(Failure::Server(message)),
                Judged::Broken(why) => return Err(Failure::Transfer(why)),
            }
            if got.len() > MAX_ADVERTISEMENT {
                return Err(Failure::Transfer(format!(
                    "the capability advertisement exceeds {MAX_ADVERTISEMENT} bytes"
                )));
            }
            let n = self.read("the capability advertisement").await?;
            if n == 0 {
                return Err(Failure::Transfer(if got.is_empty() {
                    "the server closed the connection without an answer (is the repository \
                     exported, and the path right?)"
                        .into()
                } else {
                    "the server closed the connection inside its capability advertisement".into()
                }));
            }
            got.extend_from_slice(&self.buf[..n]);
        }
    }
}

/// What the bytes of a capability advertisement received so far show.
#[derive(Debug, PartialEq, Eq)]
enum Judged {
    /// Not enough to tell.
    More,
    /// A whole protocol v2 advertisement, naming this object format
    /// (`sha1` when it names none).
    V2 { format: String },
    /// Another answer: a v0 ref advertisement, or a version other than 2.
    NotV2(String),
    /// An `ERR` packet: the server's reason.
    Refused(String),
    /// Not pkt-lines, or bytes after the advertisement's flush.
    Broken(String),
}

fn judge_advertisement(got: &[u8]) -> Judged {
    let mut reader = pkt::Reader::new(got);
    let mut first = true;
    let mut format = "sha1".to_owned();
    loop {
        let packet = match reader.next_packet() {
            Ok(Some(packet)) => packet,
            Ok(None) | Err(pkt::PktError::Truncated { .. }) => return Judged::More,
            Err(e) => return Judged::Broken(format!("capability advertisement: {e}")),
        };
        match packet {
            Packet::Data(payload) if first => {
                let line = pkt::text(payload);
                if let Some(message) = line.strip_prefix(b"ERR ") {
                    return Judged::Refused(super::error::clean_message(message));
                }
                if line != b"version 2" {
                    return Judged::NotV2(format!(
                        "its first line is {:?}, not \"version 2\"",
                        super::error::clean_message(&line[..line.len().min(60)])
                    ));
                }
                first = false;
            }
            Packet::Data(payload) => {
                if let Some(name) = pkt::text(payload).strip_prefix(b"object-format=") {
                    format = super::error::clean_message(name);
                }
            }
            Packet::Flush if !first => {
                return if reader.rest().is_empty() {
                    Judged::V2 { format }
                } else {
                    Judged::Broken("bytes after the capability advertisement".into())
                };
            }
            other => {
                return Judged::Broken(format!("capability advertisement: unexpected {other:?}"));
            }
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packets(lines: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for line in lines {
            pkt::write_data(&mut out, &[line.as_bytes()]).expect("fits");
        }
        out
    }

    #[test]
    fn an_answer_ends_at_its_first_flush_however_it_is_cut() {
        let mut answer = packets(&["acknowledgments\n", "NAK\n"]);
        answer.extend_from_slice(b"0001");
        answer.extend(packets(&["packfile\n", "\u{1}PACK..."]));
        answer.extend_from_slice(b"0000");
        let whole = answer.len();
        answer.extend_from_slice(b"0008junk");
        for cut in 1..answer.len() {
            let mut framing = Framing::default();
            let first = framing.take(&answer[..cut]);
            let second = if framing.ended {
                0
            } else {
                framing.take(&answer[cut..])
            };
            assert_eq!(first + second, whole, "cut at {cut}");
            assert!(framing.ended, "cut at {cut}");
        }
        let mut broken = Framing::default();
        assert_eq!(
            broken.take(b"zzzz0000"),
            8,
            "passed on for the parser to refuse"
        );
        assert!(!broken.ended && broken.lost);
    }

    #[test]
    fn urls_name_the_daemon_and_the_repository() {
        let daemon = |url: &str| Daemon::new(&Url::parse(url).expect("a URL"));
        assert_eq!(
            daemon("git://example.invalid/srv/r.git"),
            Ok(Daemon {
                host: "example.invalid".into(),
                port: DEFAULT_PORT,
                path: "/srv/r.git".into()
            })
        );
        let d = daemon("git://127.0.0.1:4000/r.git").expect("valid");
        assert_eq!(
            d.request_line().expect("fits"),
            b"003agit-upload-pack /r.git\0host=127.0.0.1:4000\0\0version=2\0"
        );
        let d = daemon("git://h/r").expect("valid");
        assert_eq!(
            d.request_line().expect("fits"),
            b"0029git-upload-pack /r\0host=h\0\0version=2\0"
        );
        let d = daemon("git://[::1]:4000/r").expect("valid");
        assert_eq!(d.host, "[::1]");
        let d = daemon("git://h/srv/my%20repo.git").expect("valid");
        assert_eq!(d.path, "/srv/my repo.git");
        for bad in ["git://h/", "git://h", "git://h/r%00.git", "git://h/r%0A"] {
            assert!(daemon(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_ipv6_daemon_is_reached_by_its_bare_address() {
        // A listener on [::1] that answers as a v0 daemon would: reached,
        // and judged not to speak v2.
        let Ok(listener) = std::net::TcpListener::bind("[::1]:0") else {
            return; // no IPv6 loopback here
        };
        let port = listener.local_addr().expect("address").port();
        listener.set_nonblocking(true).expect("non-blocking");
        let server = std::thread::spawn(move || {
            use std::io::{Read as _, Write as _};
            // At most 5 s for the connection, so a failed test ends.
            let mut stream = (0..500)
                .find_map(|_| match listener.accept() {
                    Ok((stream, _)) => Some(stream),
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(10));
                        None
                    }
                })
                .expect("a connection within 5 s");
            stream.set_nonblocking(false).expect("blocking");
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .expect("a read timeout");
            let mut request = [0u8; 256];
            let _ = stream.read(&mut request);
            let _ = stream.write_all(&packets(&["1234 HEAD\0multi_ack\n"]));
        });
        let url = Url::parse(&format!("git://[::1]:{port}/r.git")).expect("a URL");
        let daemon = Daemon::new(&url).expect("valid");
        let second = Duration::from_secs(1);
        let answer = daemon.command(b"", second, second, second * 5).await;
        assert!(
            matches!(answer, Ok(Err(_))),
            "not v2, but reached: {:?}",
            answer.err()
        );
        server.join().expect("the listener");
    }

    #[test]
    fn only_a_whole_v2_advertisement_passes() {
        let mut v2 = packets(&["version 2\n", "agent=git/2.47\n", "ls-refs=unborn\n"]);
        assert_eq!(judge_advertisement(&v2[..10]), Judged::More);
        assert_eq!(judge_advertisement(&v2), Judged::More);
        let mut sha256 = v2.clone();
        pkt::write_flush(&mut v2);
        let sha1 = Judged::V2 {
            format: "sha1".into(),
        };
        assert_eq!(judge_advertisement(&v2), sha1);
        sha256.extend(packets(&["object-format=sha256\n"]));
        pkt::write_flush(&mut sha256);
        let format = "sha256".into();
        assert_eq!(judge_advertisement(&sha256), Judged::V2 { format });
        v2.extend_from_slice(b"0008NAK\n");
        assert!(matches!(judge_advertisement(&v2), Judged::Broken(_)));

        let v0 = packets(&["1234567890123456789012345678901234567890 HEAD\0multi_ack\n"]);
        assert!(matches!(judge_advertisement(&v0), Judged::NotV2(_)));
        let err = packets(&["ERR access denied or repository not exported: /r\n"]);
        assert_eq!(
            judge_advertisement(&err),
            Judged::Refused("access denied or repository not exported: /r".into())
        );
        assert!(matches!(judge_advertisement(b"zzzz"), Judged::Broken(_)));
        let mut flush_first = Vec::new();
        pkt::write_flush(&mut flush_first);
        assert!(matches!(
            judge_advertisement(&flush_first),
            Judged::Broken(_)
        ));
    }
}
