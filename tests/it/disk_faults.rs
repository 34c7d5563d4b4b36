//! Write errors leave no trace and the store heals: a full disk (a small loop-mounted
//! ext4 that fills up) and a process out of file descriptors (a low RLIMIT_NOFILE). The
//! failed change is answered with a `storage` error naming the cause and the fix, is never
//! visible afterwards (not even after reopening), and once the cause is gone the next
//! change succeeds in the same process. Store-level tests (the store is what fails).

use crate::support;
use crate::support::loopfs::fill;
use crate::support::noise;
use crate::support::store::NOW;
use baton::engine::Run;
use baton::error::{BatonResult, ErrorCode};
use baton::store::{RunStore, SledStore};

/// Advance run `id` of [`support::store::ping_pong`] with `output`, as a new op.
async fn advance(store: &SledStore, id: &str, version: u64, output: String) -> BatonResult<Run> {
    support::store::advance(store, &uuid::Uuid::new_v4().to_string(), id, version, "next", output, NOW).await
}

/// The run is exactly at `version`, with its events, and the store is consistent.
async fn assert_at(store: &SledStore, id: &str, version: u64) {
    let run = store.run(id).await.unwrap().unwrap();
    assert_eq!(run.version, version, "the failed change is not visible");
    assert_eq!(store.events(id, 1, u64::MAX, usize::MAX).await.unwrap().len() as u64, version);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_cleanly_and_the_store_heals() {
    if !support::loopfs::available("a_full_disk_fails_cleanly_and_the_store_heals") {
        return;
    }
    let fs = support::loopfs::LoopFs::new(16);
    let dir = fs.mnt.join("db");
    let store = SledStore::open(&dir).unwrap();
    let mut acked = support::store::create(&store, support::store::new_run("r1", support::store::ping_pong()), NOW).await.version;
    fill(&fs.mnt.join("filler"));
    let mut failure = None;
    for i in 0..400 {
        match advance(&store, "r1", acked, noise(i, 40_000)).await {
            Ok(run) => acked = run.version,
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let err = failure.expect("the disk filled up");
    assert_eq!(err.code, ErrorCode::Storage, "{err}");
    assert!(err.message.contains("No space left on device") && err.fix.contains("Free space"), "{err}");
    assert_at(&store, "r1", acked).await;
    // Still full: still refused, still invisible.
    assert_eq!(advance(&store, "r1", acked, "small".into()).await.unwrap_err().code, ErrorCode::Storage);
    assert_at(&store, "r1", acked).await;
    std::fs::remove_file(fs.mnt.join("filler")).unwrap();
    let healed = advance(&store, "r1", acked, "after freeing space".into()).await.expect("writes work again without a restart");
    assert_eq!(healed.version, acked + 1);
    let report = store.verify().await.unwrap();
    assert!(report.is_sound(), "{report:?}");
    drop(store);
    let store = SledStore::open(&dir).unwrap();
    assert_at(&store, "r1", acked + 1).await;
    assert!(store.verify().await.unwrap().is_sound());
    println!("disk full after {} acknowledged changes: {err}", acked - 1);
}

const EMFILE_CHILD: &str = "BATON_EMFILE_CHILD";

/// Runs itself in a child process, whose descriptor limit it may lower.
#[test]
fn running_out_of_file_descriptors_fails_cleanly_and_heals() {
    if std::env::var_os(EMFILE_CHILD).is_none() {
        let out = support::rerun(module_path!(), "running_out_of_file_descriptors_fails_cleanly_and_heals")
            .env(EMFILE_CHILD, "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && stdout.contains("EMFILE-CHECKED"), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    runtime.block_on(async {
        let store = SledStore::open(&tmp.path().join("db")).unwrap();
        let mut acked = support::store::create(&store, support::store::new_run("r1", support::store::ping_pong()), NOW).await.version;
        acked = advance(&store, "r1", acked, "warm".into()).await.unwrap().version;
        // Other code using up the process's descriptors (a flood of connections): the
        // store's reserve keeps writes working, small changes and large ones (sled opens a
        // file per large value). sled's background threads may take a freed descriptor
        // first; then the change is refused cleanly. Either way nothing wedges.
        let mut applied = 0;
        for seed in 0..4 {
            let hoard = hoard_descriptors();
            for output in ["small change".to_string(), noise(seed, 200_000)] {
                match advance(&store, "r1", acked, output).await {
                    Ok(run) => {
                        acked = run.version;
                        applied += 1;
                    }
                    Err(e) => {
                        assert!(e.code == ErrorCode::Storage && e.message.contains("Too many open files"), "{e}");
                        assert_at(&store, "r1", acked).await;
                    }
                }
            }
            restore(hoard);
            acked = advance(&store, "r1", acked, "after the flood".into()).await.expect("descriptors are back").version;
        }
        println!("{applied} of 8 changes applied with every descriptor taken");
        // No descriptor to be had at all: a change the journal takes needs none (its files
        // are open), so it is applied.
        let limit = no_new_descriptors();
        let small = advance(&store, "r1", acked, "small change".into()).await;
        restore((limit, Vec::new()));
        acked = small.expect("a journaled change opens no file").version;
        assert_at(&store, "r1", acked).await;
        // One too large for the journal goes through sled, which opens a file for a large
        // value: refused before sled sees it, invisible, and the next change after
        // descriptors are back succeeds.
        {
            let output = noise(7, 200_000);
            let limit = no_new_descriptors();
            let err = advance(&store, "r1", acked, output.clone()).await.unwrap_err();
            restore((limit, Vec::new()));
            assert_eq!(err.code, ErrorCode::Storage, "{err}");
            assert!(err.message.contains("Too many open files") && err.fix.contains("open-file limit"), "{err}");
            assert_at(&store, "r1", acked).await;
            acked = advance(&store, "r1", acked, output).await.expect("heals once descriptors are free").version;
        }
        assert!(store.verify().await.unwrap().is_sound());
        drop(store);
        let store = SledStore::open(&tmp.path().join("db")).unwrap();
        assert_at(&store, "r1", acked).await;
    });
    println!("EMFILE-CHECKED");
}

/// Let no new descriptor be opened: a soft limit of 3 (stdio) keeps open ones valid.
fn no_new_descriptors() -> libc::rlimit {
    let mut old = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut old) };
    let low = libc::rlimit { rlim_cur: 3, rlim_max: old.rlim_max };
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &low) }, 0);
    old
}

/// Use up every file descriptor, as a flood of connections would: lower the soft limit
/// near the descriptors open now and fill the rest with /dev/null. Returns the old limit
/// and the hoard.
fn hoard_descriptors() -> (libc::rlimit, Vec<std::fs::File>) {
    let highest =
        std::fs::read_dir("/proc/self/fd").unwrap().filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok()).max().unwrap();
    let mut old = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut old) };
    let low = libc::rlimit { rlim_cur: highest + 16, rlim_max: old.rlim_max };
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &low) }, 0);
    let mut hoard = Vec::new();
    while let Ok(file) = std::fs::File::open("/dev/null") {
        hoard.push(file);
    }
    (old, hoard)
}

fn restore((limit, hoard): (libc::rlimit, Vec<std::fs::File>)) {
    drop(hoard);
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
}
