//! A small ext4 file system on a loop device, for tests of what survives a power cut or a
//! full disk. Needs root and loop devices: without them a test prints SKIPPED, or fails
//! when the environment variable CI is set (CI must run these tests).

use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `_IOR('X', 125, __u32)`: shut an ext4 file system down as a power cut would.
const EXT4_IOC_SHUTDOWN: libc::c_ulong = 0x8004_587D;
/// Do not even flush the journal: whatever the file system had not committed is gone.
const EXT4_GOING_FLAGS_NOLOGFLUSH: u32 = 2;

/// A mounted loop file system; unmounted (and its image removed) on drop, even on panic.
pub struct LoopFs {
    _dir: tempfile::TempDir,
    image: PathBuf,
    pub mnt: PathBuf,
    mounted: bool,
}

/// Whether this machine can run loop-device tests; prints SKIPPED (or panics under CI) if not.
pub fn available(test: &str) -> bool {
    let root = unsafe { libc::geteuid() } == 0;
    let tools = ["mkfs.ext4", "mount", "umount"]
        .iter()
        .all(|t| Command::new("sh").args(["-c", &format!("command -v {t}")]).output().is_ok_and(|o| o.status.success()));
    let loop_dev = Path::new("/dev/loop-control").exists();
    if root && tools && loop_dev {
        return true;
    }
    let why = format!("{test}: needs root, mkfs.ext4/mount and /dev/loop-control (root {root}, tools {tools}, loop {loop_dev})");
    if std::env::var_os("CI").is_some() {
        panic!("{why}; CI must run it");
    }
    println!("SKIPPED {why}");
    false
}

impl LoopFs {
    /// A fresh ext4 file system of `mib` MiB, mounted on a temp dir.
    pub fn new(mib: u64) -> LoopFs {
        let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
        std::fs::create_dir_all(base).unwrap();
        let dir = tempfile::tempdir_in(base).unwrap();
        let image = dir.path().join("fs.img");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        std::fs::File::create(&image).unwrap().set_len(mib * 1024 * 1024).unwrap();
        run("mkfs.ext4", &["-q", "-F", "-m", "0", image.to_str().unwrap()]);
        let mut fs = LoopFs { _dir: dir, image, mnt, mounted: false };
        fs.mount();
        fs
    }

    pub fn mount(&mut self) {
        assert!(!self.mounted);
        run("mount", &["-o", "loop", self.image.to_str().unwrap(), self.mnt.to_str().unwrap()]);
        self.mounted = true;
    }

    /// Cut the power: shut the file system down without flushing its journal, so only what
    /// was already on the device survives. Then end the processes using it and unmount it
    /// with [`LoopFs::unmount`].
    pub fn power_cut(&mut self) {
        cut_power(&self.mnt);
    }

    /// Kill every process using the file system and unmount it. A socket connected to
    /// one bound on it keeps the mount busy until the kernel releases it after its owner
    /// died, so a busy mount is retried for a few seconds.
    pub fn unmount(&mut self) {
        if !self.mounted {
            return;
        }
        let mnt = self.mnt.to_str().unwrap().to_string();
        for _ in 0..250 {
            self.kill_users();
            let out = Command::new("umount").arg(&mnt).output().unwrap_or_else(|e| panic!("umount: {e}"));
            if out.status.success() {
                self.mounted = false;
                return;
            }
            let why = String::from_utf8_lossy(&out.stderr);
            assert!(why.contains("busy"), "umount {mnt}: {why}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!("{mnt} stayed busy for 5 s after every process using it was killed");
    }

    /// SIGKILL every process with a file, or its working directory, on this file system:
    /// only processes this test started can have one in its private temp dir.
    pub fn kill_users(&self) {
        for _ in 0..50 {
            let users = self.users();
            if users.is_empty() {
                return;
            }
            for pid in &users {
                unsafe { libc::kill(*pid, libc::SIGKILL) };
            }
            for pid in users {
                // Reap our own children; others vanish once killed.
                unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
            }
        }
        panic!("processes still use {}", self.mnt.display());
    }

    fn users(&self) -> Vec<i32> {
        let me = std::process::id() as i32;
        let mut users = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
            if pid == me {
                continue;
            }
            let proc_dir = entry.path();
            let uses = |link: PathBuf| std::fs::read_link(link).is_ok_and(|t| t.starts_with(&self.mnt));
            let open = std::fs::read_dir(proc_dir.join("fd")).into_iter().flatten().flatten().any(|fd| uses(fd.path()));
            if open || uses(proc_dir.join("cwd")) {
                users.push(pid);
            }
        }
        users
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        if self.mounted {
            self.kill_users();
            let _ = Command::new("umount").arg(&self.mnt).status();
            if std::fs::read_to_string("/proc/mounts").is_ok_and(|m| m.contains(self.mnt.to_str().unwrap())) {
                let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
            }
        }
    }
}

fn run(tool: &str, args: &[&str]) {
    let out = Command::new(tool).args(args).output().unwrap_or_else(|e| panic!("{tool}: {e}"));
    assert!(out.status.success(), "{tool} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Fill the file system holding `path` to its last block.
pub fn fill(path: &Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0x5a; 64 * 1024];
    while file.write_all(&chunk).is_ok() {}
    for size in [4096, 1024, 1] {
        while file.write_all(&chunk[..size]).is_ok() {}
    }
    let _ = file.sync_all();
}

/// [`LoopFs::power_cut`] of the file system mounted at `mnt`, from any thread (to cut it
/// while another is writing).
pub fn cut_power(mnt: &Path) {
    let dir = std::fs::File::open(mnt).unwrap();
    let flags: u32 = EXT4_GOING_FLAGS_NOLOGFLUSH;
    // SAFETY: the ioctl reads one u32 from a valid pointer.
    let ret = unsafe { libc::ioctl(dir.as_raw_fd(), EXT4_IOC_SHUTDOWN as _, &flags) };
    assert_eq!(ret, 0, "EXT4_IOC_SHUTDOWN: {}", std::io::Error::last_os_error());
}
