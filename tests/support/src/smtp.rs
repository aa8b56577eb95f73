//! A throwaway SMTP capture server: aiosmtpd (PyPI) with its Maildir
//! handler, installed into `.stack/venv` by `deploy/install.sh`. Every mail
//! it accepts lands as a file in the Maildir, which tests read.

use std::path::PathBuf;
use std::process::Command;

use crate::process::{Process, scratch_dir};

/// The Python that has aiosmtpd: `LANDLORD_PYTHON`, else `.stack/venv/bin/python`.
pub fn capture_python() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("LANDLORD_PYTHON") {
        return Ok(PathBuf::from(path));
    }
    let path = crate::landlord_home().join("venv/bin/python");
    anyhow::ensure!(path.exists(), "{} not found — run deploy/install.sh", path.display());
    Ok(path)
}

/// A captured mail: its raw bytes as received.
#[derive(Debug, Clone)]
pub struct CapturedMail {
    pub raw: String,
}

impl CapturedMail {
    /// The mail with quoted-printable undone — soft line breaks joined and
    /// `=XX` decoded — so that a text is found whatever a part's encoding
    /// (lettre picks quoted-printable once a line is long, and then a `=`
    /// in a random password reads `=3D` in the raw mail).
    pub fn decoded(&self) -> String {
        let joined = self.raw.replace("=\r\n", "").replace("=\n", "");
        let bytes = joined.as_bytes();
        let hex = |b: u8| char::from(b).to_digit(16).and_then(|d| u8::try_from(d).ok());
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'='
                && let (Some(high), Some(low)) =
                    (bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex))
            {
                out.push(high * 16 + low);
                i += 3;
                continue;
            }
            out.push(bytes[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// The first header named `name` (case-insensitive), unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.raw.split("\r\n\r\n").next().or_else(|| self.raw.split("\n\n").next())?;
        let mut value: Option<String> = None;
        for line in head.lines() {
            if let Some(v) = value.as_mut() {
                if line.starts_with([' ', '\t']) {
                    v.push_str(line.trim_start_matches([' ', '\t']));
                    continue;
                }
                break;
            }
            if let Some((key, v)) = line.split_once(':')
                && key.eq_ignore_ascii_case(name)
            {
                value = Some(v.trim().to_owned());
            }
        }
        value
    }
}

#[derive(Debug)]
pub struct SmtpCapture {
    port: u16,
    dir: PathBuf,
    process: Option<Process>,
}

impl SmtpCapture {
    pub async fn start() -> anyhow::Result<Self> {
        let mut capture = Self { port: crate::free_port(), dir: scratch_dir("smtp")?, process: None };
        capture.launch().await?;
        Ok(capture)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    async fn launch(&mut self) -> anyhow::Result<()> {
        let mut command = Command::new(capture_python()?);
        command
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{}", self.port)])
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(self.dir.join("maildir"));
        self.process = Some(Process::start_listening("aiosmtpd", command, self.port, self.dir.join("smtp.log")).await?);
        Ok(())
    }

    /// SIGKILL: the port refuses connections until [`Self::restart`].
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// Starts again on the same port with the same Maildir.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.launch().await
    }

    /// Every mail received so far, oldest first.
    pub fn mails(&self) -> Vec<CapturedMail> {
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = ["new", "cur"]
            .iter()
            .filter_map(|sub| std::fs::read_dir(self.dir.join("maildir").join(sub)).ok())
            .flatten()
            .filter_map(|entry| entry.ok())
            .filter_map(|entry| Some((entry.metadata().ok()?.modified().ok()?, entry.path())))
            .collect();
        files.sort();
        files
            .into_iter()
            .filter_map(|(_, path)| std::fs::read_to_string(path).ok())
            .map(|raw| CapturedMail { raw })
            .collect()
    }

    /// Mails addressed to `to` (matched within the `To` header).
    pub fn mails_to(&self, to: &str) -> Vec<CapturedMail> {
        self.mails().into_iter().filter(|m| m.header("To").is_some_and(|h| h.contains(to))).collect()
    }
}

impl Drop for SmtpCapture {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::CapturedMail;

    #[test]
    fn decoded_undoes_quoted_printable_and_leaves_the_rest() {
        let mail = CapturedMail {
            raw: "Content-Type: multipart/alternative;\r\n boundary=\"b=1\"\r\n\r\nTemporary password: ab=3Dc=\r\nd=3D=\r\n\r\nURL: x=zz".into(),
        };
        let decoded = mail.decoded();
        assert!(decoded.contains("Temporary password: ab=cd="), "{decoded}");
        assert!(decoded.contains("boundary=\"b=1\""), "{decoded}");
        assert!(decoded.contains("URL: x=zz"), "{decoded}");
    }
}
