//! The vpsup binary `init` installs on a host, so the host's renewal timer can
//! run `vpsup renew-certs --local`: this vpsup, or `--host-binary PATH` (built
//! for another CPU or libc). Which CPUs it runs on is read from its ELF header,
//! so an operator on macOS, or an x86_64 laptop facing an arm64 VPS, is told
//! instead of getting a binary that cannot start.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub struct HostBinary {
    pub source: PathBuf,
    pub content: Vec<u8>,
    pub sha256: String,
    /// The `uname -m` names of the CPUs it runs on.
    pub arches: Vec<&'static str>,
}

impl HostBinary {
    /// Reads `path`, which must be a Linux executable.
    pub fn load(path: &Path) -> Result<HostBinary, String> {
        let content =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let arches = elf_arches(&content).map_err(|why| format!("{} {why}", path.display()))?;
        let sha256 = Sha256::digest(&content)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(HostBinary {
            source: path.to_path_buf(),
            content,
            sha256,
            arches,
        })
    }

    /// The playbook's variables describing it (empty ones when there is none;
    /// where it goes is the layout's `host_binary_path`).
    pub fn vars(binary: Option<&HostBinary>) -> serde_json::Map<String, serde_json::Value> {
        use serde_json::json;
        let mut vars = serde_json::Map::new();
        vars.insert(
            "host_binary_sha256".into(),
            json!(binary.map_or("", |b| b.sha256.as_str())),
        );
        vars.insert(
            "host_binary_size".into(),
            json!(binary.map_or(0, |b| b.content.len())),
        );
        vars.insert(
            "host_binary_arches".into(),
            json!(binary.map_or(&[][..], |b| &b.arches[..])),
        );
        vars
    }
}

/// The CPUs an ELF executable runs on, as `uname -m` names them.
fn elf_arches(bytes: &[u8]) -> Result<Vec<&'static str>, String> {
    if bytes.len() < 20 || &bytes[..4] != b"\x7fELF" {
        return Err("is not a Linux (ELF) executable".to_string());
    }
    let machine = match bytes[5] {
        1 => u16::from_le_bytes([bytes[18], bytes[19]]),
        2 => u16::from_be_bytes([bytes[18], bytes[19]]),
        _ => return Err("has an ELF header of unknown byte order".to_string()),
    };
    let arches: &[&str] = match machine {
        62 => &["x86_64"],
        183 => &["aarch64"],
        40 => &["armv7l", "armv8l"],
        3 => &["i686", "i586", "i386"],
        243 => &["riscv64"],
        other => {
            return Err(format!(
                "is for ELF machine {other}, which vpsup does not know"
            ))
        }
    };
    Ok(arches.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(class_data: u8, machine: [u8; 2]) -> Vec<u8> {
        let mut h = b"\x7fELF".to_vec();
        h.extend([2, class_data, 1]);
        h.resize(18, 0);
        h.extend(machine);
        h.resize(64, 0);
        h
    }

    #[test]
    fn the_running_test_binary_is_for_this_cpu() {
        let me = HostBinary::load(&std::env::current_exe().unwrap()).unwrap();
        assert!(
            me.arches.contains(&std::env::consts::ARCH),
            "{:?}",
            me.arches
        );
        assert_eq!(me.sha256.len(), 64);
    }

    #[test]
    fn arm64_and_other_cpus_are_read_from_the_header() {
        assert_eq!(elf_arches(&header(1, [183, 0])).unwrap(), ["aarch64"]);
        assert_eq!(elf_arches(&header(2, [0, 62])).unwrap(), ["x86_64"]);
        assert!(elf_arches(&header(1, [0x99, 0x99]))
            .unwrap_err()
            .contains("39321"));
    }

    #[test]
    fn a_script_or_a_mach_o_binary_is_refused() {
        assert!(elf_arches(b"#!/bin/sh\necho hi\n").is_err());
        assert!(elf_arches(&[0xcf, 0xfa, 0xed, 0xfe, 7, 0, 0, 1]).is_err());
    }
}
