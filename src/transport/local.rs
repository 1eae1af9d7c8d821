//! The local transport: vpsup running on the host itself (the renewal timer).
//! Same scripts as over SSH, run by a local `sh`.

use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::{check_sudo, ExecOutput, ExecRequest, OutputSink, OutputStream, Transport};

pub struct LocalTransport {
    user: String,
    is_root: bool,
    round_trips: AtomicUsize,
}

impl LocalTransport {
    /// `user` is who we run as (for messages); `is_root` whether sudo is unnecessary.
    pub fn new(user: impl Into<String>, is_root: bool) -> Self {
        LocalTransport {
            user: user.into(),
            is_root,
            round_trips: AtomicUsize::new(0),
        }
    }

    /// As whoever this process runs as (the owner of /proc/self is its
    /// effective user): root needs no sudo.
    pub fn current() -> Self {
        use std::os::unix::fs::MetadataExt;
        let uid = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
        let user = std::env::var("USER").unwrap_or_else(|_| match uid {
            Some(0) => "root".to_string(),
            Some(uid) => format!("uid {uid}"),
            None => "unknown user".to_string(),
        });
        LocalTransport::new(user, uid == Some(0))
    }
}

#[async_trait]
impl Transport for LocalTransport {
    fn describe(&self) -> String {
        "local".to_string()
    }

    fn is_root(&self) -> bool {
        self.is_root
    }

    fn round_trips(&self) -> usize {
        self.round_trips.load(Ordering::Relaxed)
    }

    async fn exec(&self, req: ExecRequest) -> super::Result<ExecOutput> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let use_sudo = req.become_root && !self.is_root;
        let (argv, input) = req.program(use_sudo);
        let mut child = tokio::process::Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let (Some(mut stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            unreachable!("all three streams were requested as pipes");
        };
        let feed = async {
            if let Some(bytes) = input {
                // A script that exits without reading its input is not an error.
                let _ = stdin.write_all(bytes).await;
            }
            drop(stdin);
        };
        let sink = req.stream.as_ref();
        let (_, out, err, status) = tokio::join!(
            feed,
            drain(stdout, OutputStream::Stdout, sink),
            drain(stderr, OutputStream::Stderr, sink),
            child.wait()
        );
        let status = status?;
        let output = ExecOutput {
            stdout: out?,
            stderr: err?,
            exit_status: status.code().map(|c| c as u32),
            exit_signal: std::os::unix::process::ExitStatusExt::signal(&status)
                .map(|s| s.to_string()),
        };
        check_sudo(output, use_sudo, &self.user, "local")
    }
}

async fn drain(
    mut pipe: impl AsyncRead + Unpin,
    which: OutputStream,
    sink: Option<&OutputSink>,
) -> std::io::Result<Vec<u8>> {
    let mut all = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = pipe.read(&mut buf).await?;
        if n == 0 {
            return Ok(all);
        }
        if let Some(sink) = sink {
            sink(which, &buf[..n]);
        }
        all.extend_from_slice(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::FileMeta;
    use std::os::unix::fs::PermissionsExt;

    fn local() -> LocalTransport {
        LocalTransport::new("test", true)
    }

    #[tokio::test]
    async fn exec_collects_output_and_status() {
        let out = local()
            .exec(ExecRequest::new("echo out; echo err >&2; exit 3"))
            .await
            .unwrap();
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
        assert_eq!(out.exit_status, Some(3));
    }

    #[tokio::test]
    async fn stdin_reaches_the_script_and_files_round_trip() {
        let t = local();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.env");
        let path = path.to_str().unwrap();
        assert!(!t.exists(path, false).await.unwrap());
        assert_eq!(t.read_file(path, false).await.unwrap(), None);
        t.put_file(path, b"TOKEN=s3cret\n", &FileMeta::mode(0o600), false)
            .await
            .unwrap();
        assert!(t.exists(path, false).await.unwrap());
        assert_eq!(
            t.read_file(path, false).await.unwrap().unwrap(),
            b"TOKEN=s3cret\n"
        );
        let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600);
        // No temp file is left beside it.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert_eq!(t.round_trips(), 5);
    }

    #[tokio::test]
    async fn piped_scripts_run_from_stdin_and_keep_their_commands_off_it() {
        // `cat` must not swallow the rest of the script: the engine redirects
        // commands' stdin, but the shell itself reads the script from stdin.
        let out = local()
            .exec(ExecRequest::piped("x=1\necho \"x=$x\"\necho second"))
            .await
            .unwrap();
        assert_eq!(out.stdout_str(), "x=1\nsecond\n");
    }

    #[tokio::test]
    async fn a_piped_script_cut_short_runs_none_of_its_commands() {
        let dir = tempfile::tempdir().unwrap();
        let (first, second) = (dir.path().join("first"), dir.path().join("second"));
        let mut request = ExecRequest::piped(format!(
            "touch {}\ntouch {}",
            first.display(),
            second.display()
        ));
        // Cut where the connection might drop: after the first command.
        let cut = request.script.find("touch ").unwrap() + "touch".len();
        let cut = request.script[cut..].find('\n').unwrap() + cut + 1;
        request.script.truncate(cut);
        let out = local().exec(request).await.unwrap();
        assert!(!out.success());
        assert!(!first.exists() && !second.exists());
        // The whole script runs both.
        let whole = ExecRequest::piped(format!(
            "touch {}\ntouch {}",
            first.display(),
            second.display()
        ));
        assert!(local().exec(whole).await.unwrap().success());
        assert!(first.exists() && second.exists());
    }

    #[tokio::test]
    async fn put_file_into_a_missing_directory_fails_clearly() {
        let err = local()
            .put_file("/nonexistent-dir/x", b"x", &FileMeta::mode(0o644), false)
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("writing /nonexistent-dir/x"),
            "{err}"
        );
    }
}
