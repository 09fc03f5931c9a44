//! What the test support and the demo's rig binary (hack/demo-rig.rs) both
//! need from the repository: its root, its hack/ scripts, free ports. Kept
//! free of test-only macros (`CARGO_BIN_EXE_*`) so an example can include it.

use std::path::PathBuf;
use std::process::Command;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `hack/<script>` and returns the last line it prints (a path).
pub fn hack_script(script: &str, args: &[&str]) -> std::result::Result<PathBuf, String> {
    let out = Command::new("bash")
        .arg(repo_root().join("hack").join(script))
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("running hack/{script}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "hack/{script} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let path = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    Ok(PathBuf::from(path))
}

/// A port free right now (the OS picks it).
pub fn free_port() -> std::io::Result<u16> {
    let [port] = free_ports()?;
    Ok(port)
}

/// `N` ports free right now, all different: each stays bound until all
/// are picked (the OS may hand out a port again once it is let go).
pub fn free_ports<const N: usize>() -> std::io::Result<[u16; N]> {
    let listeners = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    let mut ports = [0; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr()?.port();
    }
    Ok(ports)
}
