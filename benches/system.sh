#!/usr/bin/env bash
# shellcheck disable=SC2016  # workload commands are single-quoted on purpose: bash -c expands them
# System benchmark: the same workloads on plain ext4, the kernel's overlayfs, fuse-overlayfs
# and ovlfs, interleaved in one run on one machine; median time per system and the ratios
# ovlfs/kernel and ovlfs/fuse-overlayfs.
#
# Usage: bash benches/system.sh [--quick] [--rootless] [--reps N] [--only w1,w2,...]
#                               [--count-requests] [--no-docs] [--keep]
#   --quick           smaller data (256 MiB big file, half-size file sets), 3 repetitions:
#                     under 3 minutes
#   --rootless        run the FUSE daemons (and the workloads on their mounts) as uid/gid
#                     65534 through fusermount3; the kernel and ext4 columns stay root
#   --reps N          repetitions per workload and system (default 5, --quick 3)
#   --only LIST       run only these workloads (keys as in the table's first column)
#   --count-requests  also run each workload once per FUSE daemon with debug logging and
#                     count the FUSE requests by opcode (written to docs as well)
#   --requests-only   only count the requests (no timed runs; the time table is kept)
#   --no-docs         print the table only; do not rewrite docs/performance.md or the SVG
#   --keep            keep the data directory (printed at the end)
# Environment: OVLFS_BIN (default: $CARGO_TARGET_DIR or ./target, then release/ovlfs),
#   OVLFS_OPTS (extra -o options for ovlfs, e.g. fsync=0),
#   FUSE_OVERLAYFS_BIN (default: fuse-overlayfs), BENCH_TMP (parent of the data dir, /tmp),
#   WORKLOAD_TIMEOUT (seconds per timed command, default 300), BENCH_NOFILE (fd limit given
#   to the daemons, default 1048576).
# Needs root (kernel overlay mounts, drop_caches), fuse3, fuse-overlayfs, git, python3.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
QUICK=0 ROOTLESS=0 REPS="" ONLY="" COUNT=0 DOCS=1 KEEP=0 TIMED=1
while (($#)); do
    case "$1" in
    --quick) QUICK=1 ;;
    --rootless) ROOTLESS=1 ;;
    --reps) REPS=$2; shift ;;
    --only) ONLY=$2; shift ;;
    --count-requests) COUNT=1 ;;
    --requests-only) COUNT=1 TIMED=0 ;;
    --no-docs) DOCS=0 ;;
    --keep) KEEP=1 ;;
    -h | --help) sed -n '3,26p' "$0"; exit 0 ;;
    *) echo "system.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

if ((QUICK)); then
    # Half-size metadata sets: the whole run stays under 3 minutes on 2 cores.
    BIG_MB=256 N_TREE=15000 N_CHMOD=1000 N_CREATE=5000 N_RM=2500 N_TAR=2500 N_GIT=2000
    N_RAND=20000 REPS=${REPS:-3}
else
    BIG_MB=1024 N_TREE=30000 N_CHMOD=2000 N_CREATE=10000 N_RM=5000 N_TAR=5000 N_GIT=2000
    N_RAND=20000 REPS=${REPS:-5}
fi
TMO=${WORKLOAD_TIMEOUT:-300}
MODE=$( ((ROOTLESS)) && echo rootless || echo root)
PY=/usr/bin/python3
[[ -x $PY ]] || PY=$(command -v python3)
OVLFS_BIN=${OVLFS_BIN:-${CARGO_TARGET_DIR:-$REPO/target}/release/ovlfs}
FO_BIN=${FUSE_OVERLAYFS_BIN:-$(command -v fuse-overlayfs || true)}
OVLFS_EXTRA=${OVLFS_OPTS:+,$OVLFS_OPTS}
NOBODY=65534

die() { echo "system.sh: $*" >&2; exit 1; }
log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

[[ $(id -u) == 0 ]] || die "run as root (kernel overlay mounts, drop_caches)"
grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || die "no kernel overlayfs"
[[ -n $FO_BIN && -x $FO_BIN ]] || die "fuse-overlayfs not found (apt-get install -y fuse-overlayfs)"
command -v fusermount3 >/dev/null || die "fusermount3 not found (apt-get install -y fuse3)"
command -v git >/dev/null || die "git not found"
# The same fd limit for every daemon. (ovlfs's directories hold an fd each while cached; near
# the limit it has the kernel prune unused entries, which costs re-lookups: a low limit is
# reported.)
NOFILE=${BENCH_NOFILE:-1048576}
ulimit -Hn "$NOFILE" 2>/dev/null || true
ulimit -Sn "$(ulimit -Hn)" 2>/dev/null || true
if (($(ulimit -Sn) < N_TREE + 2000)); then
    echo "system.sh: note: the fd limit is $(ulimit -Sn) (below the tree size): ovlfs will" \
        "prune cached entries during the walks" >&2
fi
if [[ ! -x $OVLFS_BIN ]]; then
    log "building $OVLFS_BIN"
    (cd "$REPO" && cargo build --release --quiet) || die "cargo build --release failed"
    [[ -x $OVLFS_BIN ]] || die "no ovlfs binary at $OVLFS_BIN (set OVLFS_BIN)"
fi

ROOT=$(mktemp -d "${BENCH_TMP:-/tmp}/ovlfs-sysbench.XXXXXX")
chmod 755 "$ROOT"
DATA=$ROOT/data L1=$ROOT/data/l1 L2=$ROOT/data/l2 L3=$ROOT/data/l3 EXT4=$ROOT/ext4
RESULTS=$ROOT/results.tsv COUNTS=$ROOT/counts.tsv
mkdir -p "$ROOT/bin" "$ROOT/logs" "$ROOT/home" "$ROOT/run"
: >"$RESULTS"
: >"$COUNTS"
# The daemons run from a copy every user can reach.
cp "$OVLFS_BIN" "$ROOT/bin/ovlfs"
OVLFS=$ROOT/bin/ovlfs

# --- cleanup: unmount everything this script mounted, stop the daemons it started ---------
declare -A MOUNTED=()   # mountpoint -> daemon pid ("" for the kernel overlay)
FUSE_MODE=""
unmount_one() {
    local mnt=$1 pid=${MOUNTED[$1]:-}
    if mountpoint -q "$mnt"; then
        umount "$mnt" 2>/dev/null || fusermount3 -u "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
    fi
    if [[ -n $pid ]]; then
        local i
        for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            sleep 0.2
            kill -9 "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    fi
    unset "MOUNTED[$mnt]"
}
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local m
    for m in "${!MOUNTED[@]}"; do unmount_one "$m"; done
    [[ -n $FUSE_MODE ]] && chmod "$FUSE_MODE" /dev/fuse
    if ((KEEP)); then
        echo "data kept in $ROOT" >&2
    else
        rm -rf "$ROOT"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- dataset --------------------------------------------------------------------------------
build_dataset() {
    log "building the dataset in $DATA (big file ${BIG_MB} MiB, tree $N_TREE files)"
    mkdir -p "$L1" "$L2" "$L3"
    "$PY" - "$DATA" "$BIG_MB" "$N_TREE" "$N_CHMOD" "$N_RM" "$N_TAR" "$N_GIT" <<'EOF'
import os, random, stat, sys, tarfile, io
data, big_mb, n_tree, n_chmod, n_rm, n_tar, n_git = sys.argv[1], *map(int, sys.argv[2:])
L = {1: f"{data}/l1", 2: f"{data}/l2", 3: f"{data}/l3"}

def content(key, size):
    unit = (key + "\n").encode()
    return (unit * (size // len(unit) + 1))[:size]

def size_of(i):
    return 100 + (i * 2654435761) % 3997  # 100 .. 4096 bytes

def put(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)

# tree/: n_tree files in 20 x 30 leaf directories, merged over three layers (60/25/15 %),
# some l3 files overridden by l2/l1 and some hidden by 0/0 chardev whiteouts in l1.
per_leaf = max(1, n_tree // 600)
i = 0
for a in range(20):
    for b in range(30):
        for k in range(per_leaf):
            layer = 3 if k < per_leaf * 60 // 100 else 2 if k < per_leaf * 85 // 100 else 1
            rel = f"tree/d{a:02}/e{b:02}/f{k:03}"
            put(f"{L[layer]}/{rel}", content(rel, size_of(i)))
            i += 1
        rel = f"tree/d{a:02}/e{b:02}"
        put(f"{L[1]}/{rel}/f000", content(rel + "override", 512))          # overrides l3
        os.mknod(f"{L[1]}/{rel}/f001", stat.S_IFCHR | 0o600, os.makedev(0, 0))  # whiteout

# big.bin: non-repeating pseudo-random MiBs.
rnd = random.Random(42)
block = rnd.randbytes(1 << 20)
with open(f"{L[3]}/big.bin", "wb") as f:
    for m in range(big_mb):
        f.write(m.to_bytes(8, "little") + block[8:])

for k in range(n_chmod):
    put(f"{L[2]}/chmodset/c{k:05}", content(f"chmod{k}", 2048))

# rmtree/: 80 % in l3, 20 % in l2 (same directories), 50 directories.
for k in range(n_rm):
    layer = 2 if k % 5 == 0 else 3
    put(f"{L[layer]}/rmtree/r{k % 50:02}/x{k:05}", content(f"rm{k}", size_of(k)))

# untar.tar: n_tar files in 50 directories, fixed metadata.
with tarfile.open(f"{data}/untar.tar", "w", format=tarfile.GNU_FORMAT) as tar:
    for d in range(50):
        info = tarfile.TarInfo(f"pkg/d{d:02}"); info.type = tarfile.DIRTYPE
        info.mode, info.mtime = 0o755, 1_600_000_000
        tar.addfile(info)
    for k in range(n_tar):
        body = content(f"tar{k}", size_of(k * 7))
        info = tarfile.TarInfo(f"pkg/d{k % 50:02}/t{k:05}.txt")
        info.size, info.mode, info.mtime = len(body), 0o644, 1_600_000_000
        tar.addfile(info, io.BytesIO(body))

# repo/: the work tree of a git repository (committed by the shell below).
for k in range(n_git):
    rel = f"repo/src/m{k % 40:02}/file{k:05}.rs"
    put(f"{L[3]}/{rel}", content(f"// {rel}\nfn f{k}() -> u32 {{ {k} }}", 1500 + k % 1000))
put(f"{L[3]}/repo/.gitignore", b"target/\n*.o\n")
put(f"{L[3]}/repo/README", b"benchmark repository\n")
EOF
    (
        cd "$L3/repo"
        export GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@example.invalid
        export GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@example.invalid
        export GIT_AUTHOR_DATE='2020-01-01T00:00:00Z' GIT_COMMITTER_DATE='2020-01-01T00:00:00Z'
        git init -q -b main . && git add -A && git commit -q -m "benchmark repository"
    )
    if ((ROOTLESS)); then chown -R "$NOBODY:$NOBODY" "$DATA"; fi
    # The index must match the files' final stat data (chown changed their ctime).
    git -C "$L3/repo" -c safe.directory='*' update-index -q --refresh
    # Plain ext4: the merged view copied into one directory.
    log "copying the merged view to $EXT4"
    mkdir -p "$ROOT/ro" "$EXT4"
    mount -t overlay overlay -o "ro,lowerdir=$L1:$L2:$L3" "$ROOT/ro"
    MOUNTED[$ROOT/ro]=""
    cp -a "$ROOT/ro/." "$EXT4/"
    unmount_one "$ROOT/ro"
    cp -a "$EXT4/rmtree" "$ROOT/rmtree.pristine"
    git -C "$EXT4/repo" -c safe.directory='*' update-index -q --refresh
    if ((ROOTLESS)); then chown "$NOBODY:$NOBODY" "$ROOT/home"; fi
    sync
}

# --- mounting ---------------------------------------------------------------------------------
SYSTEMS=(ext4 kernel fuse-overlayfs ovlfs)
is_fuse() { [[ $1 == fuse-overlayfs || $1 == ovlfs ]]; }
as_user() { # run "$@" as the user the workloads of system $1 run as
    local sys=$1; shift
    if ((ROOTLESS)) && is_fuse "$sys"; then
        setpriv --reuid=$NOBODY --regid=$NOBODY --clear-groups "$@"
    else
        "$@"
    fi
}

# mount_sys SYS RUNDIR [debug]: a fresh upper/work and mount under RUNDIR/mnt.
mount_sys() {
    local sys=$1 run=$2 debug=${3:-} mnt=$2/mnt pid
    rm -rf "$run"
    mkdir -p "$run/up" "$run/wk" "$mnt"
    ((ROOTLESS)) && is_fuse "$sys" && chown -R "$NOBODY:$NOBODY" "$run"
    local opts="lowerdir=$L1:$L2:$L3,upperdir=$run/up,workdir=$run/wk"
    local logf=$ROOT/logs/$sys.log
    case $sys in
    kernel)
        mount -t overlay overlay -o "$opts" "$mnt" || return 1
        MOUNTED[$mnt]=""
        return 0
        ;;
    esac
    # A simple command in the background, so $! is the daemon itself (setpriv and env exec).
    local prefix=()
    if ((ROOTLESS)); then prefix=(setpriv "--reuid=$NOBODY" "--regid=$NOBODY" --clear-groups); fi
    if [[ $sys == fuse-overlayfs && -n $debug ]]; then
        "${prefix[@]}" "$FO_BIN" -d -o "$opts" "$mnt" >"$debug" 2>&1 &
    elif [[ $sys == fuse-overlayfs ]]; then
        "${prefix[@]}" "$FO_BIN" -f -o "$opts" "$mnt" >>"$logf" 2>&1 &
    elif [[ -n $debug ]]; then
        "${prefix[@]}" env RUST_LOG=debug "$OVLFS" -f -o "$opts$OVLFS_EXTRA" "$mnt" >"$debug" 2>&1 &
    else
        "${prefix[@]}" "$OVLFS" -f -o "$opts$OVLFS_EXTRA" "$mnt" >>"$logf" 2>&1 &
    fi
    pid=$!
    MOUNTED[$mnt]=$pid
    local i
    for ((i = 0; i < 500; i++)); do
        if findmnt -rn -M "$mnt" >/dev/null 2>&1; then return 0; fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.02
    done
    echo "system.sh: $sys did not mount; last log lines:" >&2
    tail -n 5 "${debug:-$logf}" >&2 || true
    unmount_one "$mnt"
    return 1
}

# --- workloads ----------------------------------------------------------------------------------
# Each workload: a key, a label, the timed command (bash, $T is the merged directory), an
# optional untimed preparation on the same mount, whether it changes state, and how the ext4
# copy is put back afterwards.
WORKLOADS=(walk_warm read_small seq_read rand_read seq_write copyup_big copyup_small
    create rm_tree untar git_status walk_cold)
declare -A LABEL CMD PREP RESET STATEFUL
LABEL[walk_warm]="warm metadata walk (ls -lR, $N_TREE files, 3 layers)"
CMD[walk_warm]='ls -lR "$T/tree" >/dev/null'
PREP[walk_warm]='ls -lR "$T/tree" >/dev/null'
LABEL[walk_cold]="cold metadata walk (drop_caches, fresh mount)"
CMD[walk_cold]='ls -lR "$T/tree" >/dev/null'
PREP[walk_cold]='DROP'
LABEL[read_small]="read all small files (cat, $N_TREE files)"
CMD[read_small]='find "$T/tree" -type f -exec cat {} + >/dev/null'
LABEL[seq_read]="sequential read ${BIG_MB} MiB (dd bs=1M)"
CMD[seq_read]='dd if="$T/big.bin" of=/dev/null bs=1M status=none'
LABEL[rand_read]="random 4 KiB reads ($N_RAND preads)"
CMD[rand_read]='"$PY" -c "
import os, random, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
pages = os.fstat(fd).st_size // 4096
r = random.Random(1234)
for _ in range(int(sys.argv[2])):
    os.pread(fd, 4096, r.randrange(pages) * 4096)
" "$T/big.bin" "$N_RAND"'
LABEL[seq_write]="sequential write ${BIG_MB} MiB (dd bs=1M, no fsync)"
CMD[seq_write]='dd if=/dev/zero of="$T/seqw.bin" bs=1M count="$BIG_MB" status=none'
RESET[seq_write]='rm -f "$T/seqw.bin"'
STATEFUL[seq_write]=1
LABEL[copyup_big]="copy-up of a ${BIG_MB} MiB file (append 1 byte)"
CMD[copyup_big]='printf x >>"$T/big.bin"'
RESET[copyup_big]='truncate -s $((BIG_MB * 1048576)) "$T/big.bin"'
STATEFUL[copyup_big]=1
LABEL[copyup_small]="copy-up of $N_CHMOD small files (chmod -R)"
CMD[copyup_small]='chmod -R o-r "$T/chmodset"'
RESET[copyup_small]='chmod -R o+r "$T/chmodset"'
STATEFUL[copyup_small]=1
LABEL[create]="create $N_CREATE empty files (touch)"
CMD[create]='mkdir "$T/created" && cd "$T/created" && seq -f f%05.0f "$N_CREATE" | xargs touch'
RESET[create]='rm -rf "$T/created"'
STATEFUL[create]=1
LABEL[rm_tree]="rm -rf of a lower tree ($N_RM files, whiteouts)"
CMD[rm_tree]='rm -rf "$T/rmtree"'
RESET[rm_tree]='cp -a "$ROOT/rmtree.pristine" "$T/rmtree"'
STATEFUL[rm_tree]=1
LABEL[untar]="untar of $N_TAR files"
CMD[untar]='mkdir "$T/untar" && tar xf "$DATA/untar.tar" -C "$T/untar" --no-same-owner'
RESET[untar]='rm -rf "$T/untar"'
STATEFUL[untar]=1
LABEL[git_status]="git status in a lower repository ($N_GIT files, warm)"
CMD[git_status]='cd "$T/repo" && git -c safe.directory="*" status --porcelain >/dev/null'
PREP[git_status]=${CMD[git_status]}
# The performance targets, as ovlfs/kernel time ratios (throughput >= 0.9x is time <= 1.11x).
declare -A TARGET=([walk_warm]=1.5 [seq_read]=1.11 [seq_write]=1.11 [rand_read]=1.11
    [copyup_big]=1.2 [create]=2 [untar]=2 [rm_tree]=2)

export T="" DATA ROOT PY BIG_MB N_CREATE N_RAND
export HOME=$ROOT/home GIT_CONFIG_NOSYSTEM=1 GIT_OPTIONAL_LOCKS=0 LC_ALL=C

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

# run_cmd SYS CMD: runs CMD in bash as the workload user of SYS, under timeout.
run_cmd() {
    local sys=$1 cmd=$2
    as_user "$sys" timeout --kill-after=5 "$TMO" bash -c "$cmd"
}

# measure WL SYS REP: one timed run on a fresh mount; appends to $RESULTS.
measure() {
    local wl=$1 sys=$2 rep=$3 run=$ROOT/run/$2 t0 t1 rc=0 secs
    if [[ $sys == ext4 ]]; then
        T=$EXT4
    else
        mount_sys "$sys" "$run" || { printf '%s\t%s\t%s\tFAIL\n' "$wl" "$sys" "$rep" >>"$RESULTS"; return; }
        T=$run/mnt
    fi
    if [[ ${PREP[$wl]:-} == DROP ]]; then
        drop_caches
    elif [[ -n ${PREP[$wl]:-} ]]; then
        run_cmd "$sys" "${PREP[$wl]}" || true
    fi
    # Start from a quiet disk: no writeback of an earlier run's data during this one.
    [[ ${PREP[$wl]:-} == DROP ]] || sync
    t0=$EPOCHREALTIME
    run_cmd "$sys" "${CMD[$wl]}" || rc=$?
    t1=$EPOCHREALTIME
    if ((rc == 0)); then
        secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f", b - a }')
    elif ((rc == 124 || rc == 137)); then
        secs=TIMEOUT
        log "$wl on $sys: timed out after ${TMO}s"
    else
        secs=FAIL
        log "$wl on $sys: exit status $rc"
    fi
    printf '%s\t%s\t%s\t%s\n' "$wl" "$sys" "$rep" "$secs" >>"$RESULTS"
    if [[ -n ${STATEFUL[$wl]:-} && $sys == ext4 ]]; then
        bash -c "${RESET[$wl]}"
    fi
    if [[ $sys != ext4 ]]; then
        unmount_one "$run/mnt"
        rm -rf "$run"
    fi
}

# count_requests WL SYS: the FUSE requests one run of WL sends to SYS (debug logging on).
count_requests() {
    local wl=$1 sys=$2 run=$ROOT/run/count-$2 logf=$ROOT/logs/debug-$2-$1.log before after
    mount_sys "$sys" "$run" "$logf" || return 0
    T=$run/mnt
    if [[ ${PREP[$wl]:-} == DROP ]]; then
        drop_caches
    elif [[ -n ${PREP[$wl]:-} ]]; then
        run_cmd "$sys" "${PREP[$wl]}" >/dev/null 2>&1 || true
    fi
    sleep 0.3
    before=$(wc -l <"$logf")
    run_cmd "$sys" "${CMD[$wl]}" >/dev/null 2>&1 || true
    sleep 0.3
    after=$(wc -l <"$logf")
    sed -n "$((before + 1)),${after}p" "$logf" | "$PY" -c '
import collections, re, sys
wl, system = sys.argv[1], sys.argv[2]
ops = collections.Counter()
for line in sys.stdin:
    m = re.search(r"FUSE\(\s*\d+\) ino \S+ ([A-Z_]+)", line) or re.search(r"opcode: ([A-Z_]+)", line)
    if m:
        ops[m.group(1)] += 1
top = ", ".join(f"{op} {n}" for op, n in ops.most_common(6))
print(f"{wl}\t{system}\t{sum(ops.values())}\t{top}")
' "$wl" "$sys" >>"$COUNTS"
    unmount_one "$run/mnt"
    rm -rf "$run"
}

# --- rootless setup -----------------------------------------------------------------------------
rootless_check() {
    FUSE_MODE=$(stat -c %a /dev/fuse)
    chmod 666 /dev/fuse
    local sys why=""
    for sys in ovlfs fuse-overlayfs; do
        if ! mount_sys "$sys" "$ROOT/run/check-$sys"; then
            why="$sys cannot mount as uid $NOBODY (see above)"
            break
        fi
        if ! as_user "$sys" ls "$ROOT/run/check-$sys/mnt/tree" >/dev/null; then
            why="uid $NOBODY cannot list the $sys mount"
        fi
        unmount_one "$ROOT/run/check-$sys/mnt"
        rm -rf "$ROOT/run/check-$sys"
        [[ -z $why ]] || break
    done
    if [[ -n $why ]]; then
        echo "system.sh: rootless run skipped: $why" >&2
        exit 0
    fi
}

# --- main -----------------------------------------------------------------------------------
START=$SECONDS
# What is measured: the source tree's commit (the binary may be older: OVLFS_BIN) and the load.
REV=$(git -C "$REPO" describe --always --dirty 2>/dev/null || echo unknown)
REV+="${OVLFS_OPTS:+ with -o $OVLFS_OPTS}, binary built $(date -r "$OVLFS_BIN" '+%F %T'), load average at start $(cut -d' ' -f1-3 /proc/loadavg)"
build_dataset
((ROOTLESS)) && rootless_check
selected=()
for wl in "${WORKLOADS[@]}"; do
    [[ -z $ONLY || ",$ONLY," == *",$wl,"* ]] && selected+=("$wl")
done
((${#selected[@]})) || die "no workload selected (--only $ONLY)"
log "mode $MODE, $REPS repetitions, workloads: ${selected[*]}"
for wl in "${selected[@]}"; do
    ((TIMED)) || break
    # The lower data in the page cache for every system alike (walk_cold drops it itself).
    cat "$L3/big.bin" >/dev/null
    for ((rep = 0; rep < REPS; rep++)); do
        for ((s = 0; s < ${#SYSTEMS[@]}; s++)); do
            # Round robin, starting one system later each repetition.
            measure "$wl" "${SYSTEMS[(s + rep) % ${#SYSTEMS[@]}]}" "$rep"
        done
    done
    log "$wl: $(awk -F'\t' -v w="$wl" '$1 == w { printf "%s=%s ", $2, $4 }' "$RESULTS")"
done
if ((COUNT)); then
    log "counting FUSE requests (debug logging)"
    for wl in "${selected[@]}"; do
        for sys in fuse-overlayfs ovlfs; do count_requests "$wl" "$sys"; done
    done
fi
ELAPSED=$((SECONDS - START))

# --- report ---------------------------------------------------------------------------------
REPORT_ARGS=("$RESULTS" "$COUNTS" "$MODE" "$QUICK" "$REPS" "$ELAPSED" "$REV")
for wl in "${selected[@]}"; do
    REPORT_ARGS+=("$wl" "${LABEL[$wl]}" "${TARGET[$wl]:-}")
done
COUNTS_MD=$ROOT/counts.md "$PY" - "${REPORT_ARGS[@]}" >"$ROOT/report.md" 3>"$ROOT/chart.tsv" <<'EOF'
import os, statistics, sys
results, counts, mode, quick, reps, elapsed, rev = sys.argv[1:8]
rest = sys.argv[8:]
workloads = [rest[i:i + 3] for i in range(0, len(rest), 3)]
systems = ["ext4", "kernel", "fuse-overlayfs", "ovlfs"]
times = {}
for line in open(results):
    wl, sysname, rep, secs = line.rstrip("\n").split("\t")
    times.setdefault((wl, sysname), []).append(secs)

def median(wl, s):
    vals = times.get((wl, s), [])
    ok = [float(v) for v in vals if v not in ("FAIL", "TIMEOUT")]
    if not ok or len(ok) < len(vals):
        return None, ("timeout" if "TIMEOUT" in vals else "fail") if vals else "n/a"
    m = statistics.median(ok)
    return m, f"{m:.3f}"

import platform
out = []
who = ("FUSE daemons and their workloads as uid 65534 through fusermount3, kernel and ext4 "
       "as root" if mode == "rootless" else "everything as root")
out.append(f"Run: {mode} ({who}); {'--quick' if quick == '1' else 'full'}, {reps} repetitions "
           f"per system, interleaved; median seconds (lower is better). ovlfs at {rev}; "
           f"kernel {platform.release()}, {os.cpu_count()} CPUs; the run took {elapsed} s.")
out.append("")
out.append("| workload | ext4 | kernel | fuse-overlayfs | ovlfs | ovlfs/kernel | ovlfs/fuse-overlayfs |")
out.append("|---|---:|---:|---:|---:|---:|---:|")
chart = os.fdopen(3, "w")
for key, label, target in workloads:
    cells, med = [], {}
    for s in systems:
        med[s], text = median(key, s)
        cells.append(text)
    def ratio(a, b, limit):
        if med[a] is None or med[b] is None or med[b] == 0:
            return "n/a", ""
        r = med[a] / med[b]
        mark = ""
        if limit:
            mark = " ✓" if r <= float(limit) else " ✗"
        return f"{r:.2f}{mark}", f"{r:.4f}"
    rk, ck = ratio("ovlfs", "kernel", target)
    rf, cf = ratio("ovlfs", "fuse-overlayfs", "0.8")
    out.append(f"| {label} | " + " | ".join(cells) + f" | {rk} | {rf} |")
    chart.write(f"{label}\t{ck}\t{cf}\t{target}\n")
out.append("")
out.append("✓/✗: meets/misses the performance target (vs fuse-overlayfs: ≤ 0.8 everywhere; vs the "
           "kernel: walk ≤ 1.5, throughput workloads ≤ 1.11 i.e. ≥ 0.9× throughput, copy-up of "
           "the big file ≤ 1.2, create/untar/rm ≤ 2; no kernel target where none is shown).")
chart.close()
print("\n".join(out))
if os.path.getsize(counts):
    out = [f"FUSE requests per workload run ({mode}; debug logging, one run on a fresh mount, "
           "after the same untimed preparation as the timed runs):", "",
           "| workload | daemon | requests | most frequent |", "|---|---|---:|---|"]
    labels = {k: l for k, l, _ in workloads}
    for line in open(counts):
        wl, s, n, top = line.rstrip("\n").split("\t")
        out.append(f"| {labels.get(wl, wl)} | {s} | {n} | {top} |")
    with open(os.environ["COUNTS_MD"], "w") as f:
        f.write("\n".join(out) + "\n")

EOF
cat "$ROOT/report.md"
if [[ -s $ROOT/counts.md ]]; then echo; cat "$ROOT/counts.md"; fi

if ((DOCS)); then
    DOC=$REPO/docs/performance.md
    SVG=$REPO/docs/performance.svg TITLE="ovlfs time ratios ($MODE"
    if ((ROOTLESS)); then SVG=$REPO/docs/performance-rootless.svg; fi
    if ((QUICK)); then TITLE+=", --quick"; fi
    if ((TIMED)); then
        "$PY" "$REPO/benches/chart.py" "$ROOT/chart.tsv" "$SVG" "$TITLE)" || log "chart failed"
    else
        : >"$ROOT/report.md"
    fi
    "$PY" - "$DOC" "$MODE" "$ROOT/report.md" "$ROOT/counts.md" <<'EOF'
import os, sys
doc, mode, report, counts = sys.argv[1:5]
text = open(doc).read() if os.path.exists(doc) else "# Performance\n"

def put(text, tag, title, body):
    begin, end = f"<!-- system.sh {tag}: begin -->", f"<!-- system.sh {tag}: end -->"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if begin in text and end in text:
        return text.split(begin, 1)[0] + block + text.split(end, 1)[1]
    return text.rstrip("\n") + f"\n\n## {title}\n\n{block}\n"

if os.path.getsize(report):
    text = put(text, mode, f"System benchmark ({mode})", open(report).read())
if os.path.exists(counts) and os.path.getsize(counts):
    text = put(text, f"{mode} requests", f"FUSE requests ({mode})", open(counts).read())
open(doc, "w").write(text)
EOF
    log "wrote $DOC and $SVG"
fi
