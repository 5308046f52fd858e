//! `cargo xtask check-unit`: checks `dist/aetherd.service` with systemd's own tools and checks that the
//! example slices tolerate the unit's `MemoryDenyWriteExecute=yes`.
//!
//! - `systemd-analyze verify` on a copy of the unit whose `ExecStart` names an existing executable (the
//!   installed path does not exist on a build machine; the rest of the unit is checked as shipped);
//! - `systemd-analyze security --offline=true --threshold=20`: fails when the exposure score is above 2.0,
//!   prints the score;
//! - every `.so` of the example slice repository: no executable stack (`PT_GNU_STACK` without `PF_X`) and no
//!   text relocations (`DT_TEXTREL`, `DF_TEXTREL`), the two things that would make `dlopen` call
//!   `mprotect(PROT_EXEC)`, which the unit's filter refuses.
//!
//! Without `systemd-analyze` on the machine the systemd checks are skipped with a message; the ELF checks
//! always run.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Highest exposure score accepted, in tenths (`--threshold` takes this unit).
const EXPOSURE_MAX_TENTHS: u32 = 20;

pub fn check_unit(args: &[String]) -> crate::TaskResult {
    if let Some(extra) = args.first() {
        return Err(format!("check-unit takes no arguments, got '{extra}'"));
    }
    let unit = crate::util::root().join("dist").join("aetherd.service");
    match systemd_checks(&unit)? {
        Some(score) => println!("dist/aetherd.service: verify ok, exposure {score}"),
        None => println!("skipped the systemd checks: systemd-analyze is not installed (apt-get install systemd)"),
    }
    let repo = devcluster::example_slices_repo()?;
    let checked = check_slices_for_wx(&repo)?;
    println!(
        "{checked} example slice libraries load under MemoryDenyWriteExecute (no exec stack, no text relocations)"
    );
    Ok(())
}

/// Runs verify and the offline security check; the overall exposure line, or `None` without systemd-analyze.
pub fn systemd_checks(unit: &Path) -> Result<Option<String>, String> {
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(unit).map_err(|e| format!("{}: {e}", unit.display()))?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find an executable for ExecStart: {e}"))?;
    let copy_dir = std::env::temp_dir().join(format!("aether-unit-check-{}", std::process::id()));
    std::fs::create_dir_all(&copy_dir).map_err(|e| format!("{}: {e}", copy_dir.display()))?;
    let copy = copy_dir.join("aetherd.service");
    let rewritten = text.replace("ExecStart=/usr/local/bin/aetherd", &format!("ExecStart={}", exe.display()));
    std::fs::write(&copy, rewritten).map_err(|e| format!("{}: {e}", copy.display()))?;
    let verified = Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(&copy).output();
    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=true", &format!("--threshold={EXPOSURE_MAX_TENTHS}")])
        .arg(&copy)
        .output();
    let _ = std::fs::remove_dir_all(&copy_dir);
    let verified = verified.map_err(|e| format!("systemd-analyze verify: {e}"))?;
    let complaints = String::from_utf8_lossy(&verified.stderr).trim().to_owned();
    if !verified.status.success() || !complaints.is_empty() {
        return Err(format!("systemd-analyze verify refuses {}: {complaints}", unit.display()));
    }
    let security = security.map_err(|e| format!("systemd-analyze security: {e}"))?;
    let report = String::from_utf8_lossy(&security.stdout);
    let overall = report
        .lines()
        .find_map(|line| line.split_once("Overall exposure level for aetherd.service:"))
        .map(|(_, score)| score.trim().to_owned())
        .ok_or_else(|| format!("systemd-analyze security printed no overall score: {report}"))?;
    if !security.status.success() {
        return Err(format!("exposure {overall} is above {}.{}", EXPOSURE_MAX_TENTHS / 10, EXPOSURE_MAX_TENTHS % 10));
    }
    Ok(Some(overall))
}

/// Checks every `.so` under `repo`; returns how many were checked (at least one, or an error).
fn check_slices_for_wx(repo: &Path) -> Result<usize, String> {
    let mut libraries = Vec::new();
    collect_libraries(repo, &mut libraries)?;
    if libraries.is_empty() {
        return Err(format!("no slice libraries under {}", repo.display()));
    }
    for path in &libraries {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let flags = elf_wx_flags(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        if flags.exec_stack || flags.text_relocations {
            return Err(format!("{} would need W+X memory: {flags:?}", path.display()));
        }
    }
    Ok(libraries.len())
}

fn collect_libraries(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    for entry in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let path = entry.map_err(|e| format!("{}: {e}", dir.display()))?.path();
        if path.is_dir() {
            collect_libraries(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "so") {
            out.push(path);
        }
    }
    Ok(())
}

/// What in an ELF file would need writable and executable memory when loaded.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct WxFlags {
    pub exec_stack: bool,
    pub text_relocations: bool,
}

const PT_DYNAMIC: u32 = 2;
const PT_GNU_STACK: u32 = 0x6474_e551;
const PF_X: u32 = 1;
const DT_NULL: u64 = 0;
const DT_TEXTREL: u64 = 22;
const DT_FLAGS: u64 = 30;
const DF_TEXTREL: u64 = 4;

/// Reads the program headers and the dynamic section of a 64-bit little-endian ELF file.
pub fn elf_wx_flags(bytes: &[u8]) -> Result<WxFlags, String> {
    if bytes.get(..4) != Some(b"\x7fELF".as_slice()) || bytes.get(4) != Some(&2) || bytes.get(5) != Some(&1) {
        return Err("not a 64-bit little-endian ELF file".into());
    }
    let u16_at = |at: usize| bytes.get(at..at + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |at: usize| bytes.get(at..at + 4).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes);
    let u64_at = |at: usize| bytes.get(at..at + 8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
    let truncated = || "truncated ELF header".to_string();
    let phoff = usize::try_from(u64_at(0x20).ok_or_else(truncated)?).map_err(|_| truncated())?;
    let phentsize = usize::from(u16_at(0x36).ok_or_else(truncated)?);
    let phnum = usize::from(u16_at(0x38).ok_or_else(truncated)?);
    let mut flags = WxFlags::default();
    for i in 0..phnum {
        let header = phoff.checked_add(i.checked_mul(phentsize).ok_or_else(truncated)?).ok_or_else(truncated)?;
        let kind = u32_at(header).ok_or_else(truncated)?;
        let p_flags = u32_at(header + 4).ok_or_else(truncated)?;
        if kind == PT_GNU_STACK && p_flags & PF_X != 0 {
            flags.exec_stack = true;
        }
        if kind == PT_DYNAMIC {
            let offset = usize::try_from(u64_at(header + 8).ok_or_else(truncated)?).map_err(|_| truncated())?;
            let size = usize::try_from(u64_at(header + 32).ok_or_else(truncated)?).map_err(|_| truncated())?;
            for entry in (offset..offset.saturating_add(size)).step_by(16) {
                let (Some(tag), Some(value)) = (u64_at(entry), u64_at(entry + 8)) else { break };
                match tag {
                    DT_NULL => break,
                    DT_TEXTREL => flags.text_relocations = true,
                    DT_FLAGS if value & DF_TEXTREL != 0 => flags.text_relocations = true,
                    _ => {}
                }
            }
        }
    }
    Ok(flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF image: header, one PT_GNU_STACK header with `stack_flags`, one PT_DYNAMIC with `dynamic`.
    fn elf(stack_flags: u32, dynamic: &[(u64, u64)]) -> Vec<u8> {
        let mut bytes = vec![0u8; 0x40];
        bytes[..6].copy_from_slice(b"\x7fELF\x02\x01");
        bytes[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
        bytes[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        bytes[0x38..0x3a].copy_from_slice(&2u16.to_le_bytes());
        let dynamic_at = 0x40 + 2 * 56;
        let mut stack = vec![0u8; 56];
        stack[..4].copy_from_slice(&PT_GNU_STACK.to_le_bytes());
        stack[4..8].copy_from_slice(&stack_flags.to_le_bytes());
        let mut dyn_header = vec![0u8; 56];
        dyn_header[..4].copy_from_slice(&PT_DYNAMIC.to_le_bytes());
        dyn_header[8..16].copy_from_slice(&(dynamic_at as u64).to_le_bytes());
        dyn_header[32..40].copy_from_slice(&((dynamic.len() as u64 + 1) * 16).to_le_bytes());
        bytes.extend(stack);
        bytes.extend(dyn_header);
        for (tag, value) in dynamic.iter().chain([(DT_NULL, 0)].iter()) {
            bytes.extend(tag.to_le_bytes());
            bytes.extend(value.to_le_bytes());
        }
        bytes
    }

    #[test]
    fn exec_stacks_and_text_relocations_are_found() {
        assert_eq!(elf_wx_flags(&elf(6, &[(1, 5)])), Ok(WxFlags::default()));
        assert!(elf_wx_flags(&elf(7, &[])).unwrap().exec_stack);
        assert!(elf_wx_flags(&elf(6, &[(DT_TEXTREL, 0)])).unwrap().text_relocations);
        assert!(elf_wx_flags(&elf(6, &[(DT_FLAGS, DF_TEXTREL | 8)])).unwrap().text_relocations);
        assert!(!elf_wx_flags(&elf(6, &[(DT_FLAGS, 8)])).unwrap().text_relocations);
    }

    #[test]
    fn damaged_files_are_errors_not_panics() {
        let whole = elf(6, &[(DT_TEXTREL, 0)]);
        for cut in 0..whole.len() {
            let _ = elf_wx_flags(&whole[..cut]);
        }
        assert!(elf_wx_flags(b"#!/bin/sh\n").is_err());
    }

    #[test]
    fn this_test_binary_has_no_exec_stack() {
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(!elf_wx_flags(&exe).unwrap().exec_stack);
    }

    /// The shipped unit passes systemd-analyze verify and scores at most 2.0, where systemd-analyze exists.
    #[test]
    fn the_shipped_unit_verifies_and_is_hardened() {
        let unit = crate::util::root().join("dist").join("aetherd.service");
        match systemd_checks(&unit) {
            Ok(Some(score)) => eprintln!("dist/aetherd.service exposure: {score}"),
            Ok(None) => eprintln!("skipped: systemd-analyze is not installed (apt-get install systemd)"),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn a_broken_or_unhardened_unit_is_refused() {
        let shipped = std::fs::read_to_string(crate::util::root().join("dist").join("aetherd.service")).unwrap();
        let dir = std::env::temp_dir().join(format!("aether-unit-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let unit = dir.join("aetherd.service");
        std::fs::write(&unit, shipped.replace("[Service]\n", "[Service]\nFrobnicate=yes\n")).unwrap();
        let typo = systemd_checks(&unit);
        let soft: String = shipped
            .lines()
            .filter(|l| !l.starts_with("Protect") && !l.starts_with("Private"))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&unit, soft).unwrap();
        let unhardened = systemd_checks(&unit);
        let _ = std::fs::remove_dir_all(&dir);
        if matches!(typo, Ok(None)) {
            eprintln!("skipped: systemd-analyze is not installed");
            return;
        }
        assert!(typo.as_ref().is_err_and(|e| e.contains("Frobnicate")), "{typo:?}");
        assert!(unhardened.as_ref().is_err_and(|e| e.contains("above 2.0")), "{unhardened:?}");
    }
}
