// Unmodified Debian programs write checkpoints into a real 6-node k=4 m=2
// cluster through libfernec_preload.so (`fern-ec run`), two daemons are
// SIGKILLed, and the checkpoints are read back through the preload and
// compared with what the same program produced on plain tmpfs.
//
// Every command runs under /bin/sh inside `fern-ec run`, so the shell's own
// redirections go through the preload too. A program that is not installed
// (scripts/setup.sh --with-legacy installs them all) skips its test.
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "test_util.h"

namespace {

std::string Cli() { return FERN_EC_CLI; }

struct Result {
  int rc = -1;
  std::string out;
};

// Runs `cmd` with /bin/sh, capturing stdout (stderr goes to the test log).
Result Sh(const std::string& cmd) {
  Result r;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  int status = pclose(p);
  r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

std::string Quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

bool Have(const std::string& program) { return Sh("command -v " + program + " >/dev/null").rc == 0; }

class Legacy : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = "/dev/shm/fern-legacy-" + std::to_string(getpid());
    work_ = "/dev/shm/fern-legacy-work-" + std::to_string(getpid());
    std::filesystem::remove_all(root_);
    std::filesystem::remove_all(work_);
    std::filesystem::create_directories(work_ + "/plain");
    ASSERT_EQ(Sh(Cli() + " local start --root " + root_ +
                 " --nodes 6 --k 4 --m 2 --shard-size 256KiB --data-capacity 256MiB"
                 " --parity-capacity 256MiB >/dev/null")
                  .rc,
              0);
    auto rng = fern::testing::TestRng();
    // An input of a few stripes plus an odd tail, and a small tree.
    std::vector<char> bytes(5 * 1024 * 1024 + 12345);
    fern::testing::FillRandom(rng, reinterpret_cast<uint8_t*>(bytes.data()), bytes.size());
    std::ofstream(work_ + "/src.bin", std::ios::binary).write(bytes.data(), bytes.size());
    std::filesystem::create_directories(work_ + "/tree/sub");
    for (int i = 0; i < 5; ++i) {
      std::ofstream(work_ + "/tree/f" + std::to_string(i)) << "file " << i << " " << rng() << "\n";
      std::ofstream(work_ + "/tree/sub/g" + std::to_string(i), std::ios::binary)
          .write(bytes.data() + i * 100000, 70000 + i);
    }
  }
  void TearDown() override {
    Sh(Cli() + " local stop --root " + root_);
    std::filesystem::remove_all(root_);
    std::filesystem::remove_all(work_);
  }

  // `script` under the preload; $W is the work dir, /fern the cluster.
  Result Run(const std::string& script, const std::string& prefix = "") {
    return Sh(prefix + Cli() + " run --root " + root_ + " --node 1 -- /bin/sh -c " +
              Quote("W=" + work_ + "; set -e; " + script));
  }
  // The same script with /fern replaced by a plain tmpfs directory.
  Result Plain(std::string script) {
    // The replacement itself contains "/fern" (/dev/shm/fern-legacy-...):
    // search on after each replacement, never in it.
    const std::string plain = work_ + "/plain";
    for (size_t at = 0; (at = script.find("/fern", at)) != std::string::npos; at += plain.size()) {
      script.replace(at, 5, plain);
    }
    return Sh("/bin/sh -c " + Quote("W=" + work_ + "; set -e; " + script));
  }
  void KillTwo() {
    ASSERT_EQ(Sh(Cli() + " local kill 2 --root " + root_).rc, 0);
    ASSERT_EQ(Sh(Cli() + " local kill 5 --root " + root_).rc, 0);
  }
  std::string Sha(const std::string& local) { return Sh("sha256sum < " + local).out; }

  std::string root_, work_;
};

TEST_F(Legacy, DdConvFsync) {
  ASSERT_EQ(Run("mkdir -p /fern/ck && dd if=$W/src.bin of=/fern/ck/dd.bin bs=1M conv=fsync 2>/dev/null").rc, 0);
  KillTwo();
  ASSERT_EQ(Run("dd if=/fern/ck/dd.bin of=$W/dd.out bs=1M 2>/dev/null").rc, 0);
  EXPECT_EQ(Sha(work_ + "/dd.out"), Sha(work_ + "/src.bin"));
}

// dd conv=notrunc into an existing file: the preload sends only the patched
// bytes (UPDATE through the file's sequencer), so the file keeps its version,
// its bytes match the same dd on tmpfs, and scrub finds its parity right.
TEST_F(Legacy, DdNotruncPatchesInPlace) {
  const std::string patch =
      "cp $W/src.bin /fern/p.bin && printf 'PATCHED-BYTES' | dd of=/fern/p.bin bs=1 seek=1234567 conv=notrunc "
      "2>/dev/null && dd if=$W/src.bin of=/fern/p.bin bs=1000 skip=7 seek=3001 count=300 conv=notrunc 2>/dev/null";
  ASSERT_EQ(Run(patch).rc, 0);
  ASSERT_EQ(Plain(patch).rc, 0);
  EXPECT_EQ(Run("sha256sum < /fern/p.bin").out, Sha(work_ + "/plain/p.bin"));
  const std::string stat = Sh(Cli() + " stat /p.bin --json --root " + root_).out;
  EXPECT_NE(stat.find("\"version\": 1,"), std::string::npos) << "patched by a rewrite, not in place: " << stat;
  EXPECT_EQ(Sh(Cli() + " scrub /p.bin --root " + root_ + " >/dev/null").rc, 0);
  KillTwo();
  EXPECT_EQ(Run("sha256sum < /fern/p.bin").out, Sha(work_ + "/plain/p.bin"));
}

TEST_F(Legacy, CpBothWays) {
  ASSERT_EQ(Run("cp $W/src.bin /fern/cp.bin").rc, 0);
  KillTwo();
  ASSERT_EQ(Run("cp /fern/cp.bin $W/cp.out").rc, 0);
  EXPECT_EQ(Sha(work_ + "/cp.out"), Sha(work_ + "/src.bin"));
  EXPECT_EQ(Run("sha256sum < /fern/cp.bin").out, Sha(work_ + "/src.bin"));
}

TEST_F(Legacy, TarCreateAndExtract) {
  const std::string create = "tar cf /fern/t.tar -C $W tree";
  ASSERT_EQ(Run(create).rc, 0);
  ASSERT_EQ(Plain(create).rc, 0);
  // Extracting a plain archive into the cluster: directories, many files.
  ASSERT_EQ(Run("mkdir -p /fern/x && tar xf $W/plain/t.tar -C /fern/x").rc, 0);
  KillTwo();
  EXPECT_EQ(Run("sha256sum < /fern/t.tar").out, Sha(work_ + "/plain/t.tar"));
  ASSERT_EQ(Run("mkdir -p $W/out && tar xf /fern/t.tar -C $W/out").rc, 0);
  EXPECT_EQ(Sh("diff -r " + work_ + "/tree " + work_ + "/out/tree").rc, 0);
  ASSERT_EQ(Run("tar cf $W/again.tar -C /fern/x tree").rc, 0);
  ASSERT_EQ(Sh("mkdir -p " + work_ + "/again && tar xf " + work_ + "/again.tar -C " + work_ + "/again").rc, 0);
  EXPECT_EQ(Sh("diff -r " + work_ + "/tree " + work_ + "/again/tree").rc, 0);
}

TEST_F(Legacy, Rsync) {
  if (!Have("rsync")) GTEST_SKIP() << "rsync not installed";
  ASSERT_EQ(Run("rsync -r $W/tree/ /fern/rs/").rc, 0);
  KillTwo();
  ASSERT_EQ(Run("rsync -r /fern/rs/ $W/rs-out/").rc, 0);
  EXPECT_EQ(Sh("diff -r " + work_ + "/tree " + work_ + "/rs-out").rc, 0);
}

TEST_F(Legacy, OpensslEnc) {
  if (!Have("openssl")) GTEST_SKIP() << "openssl not installed";
  const std::string key = " -K 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
                          " -iv 0f0e0d0c0b0a09080706050403020100";
  const std::string enc = "openssl enc -aes-256-cbc" + key + " -in $W/src.bin -out /fern/enc";
  ASSERT_EQ(Run(enc).rc, 0);
  ASSERT_EQ(Plain(enc).rc, 0);
  KillTwo();
  EXPECT_EQ(Run("sha256sum < /fern/enc").out, Sha(work_ + "/plain/enc"));
  ASSERT_EQ(Run("openssl enc -d -aes-256-cbc" + key + " -in /fern/enc -out $W/dec").rc, 0);
  EXPECT_EQ(Sha(work_ + "/dec"), Sha(work_ + "/src.bin"));
}

TEST_F(Legacy, NumpySaveLoadMmapPickle) {
  if (Sh("/usr/bin/python3 -c 'import numpy' 2>/dev/null").rc != 0) GTEST_SKIP() << "numpy missing";
  const std::string save =
      "/usr/bin/python3 -c 'import numpy as n, pickle; a = n.arange(1 << 21, dtype=n.int64); "
      "n.save(\"/fern/ck/s.npy\", a); pickle.dump({\"a\": a[:1000], \"s\": \"x\"}, "
      "open(\"/fern/ck/p.pkl\", \"wb\"))'";
  ASSERT_EQ(Run("mkdir -p /fern/ck && " + save).rc, 0);
  ASSERT_EQ(Plain("mkdir -p /fern/ck && " + save).rc, 0);
  KillTwo();
  EXPECT_EQ(Run("sha256sum < /fern/ck/s.npy").out, Sha(work_ + "/plain/ck/s.npy"));
  auto load = Run(
      "/usr/bin/python3 -c 'import numpy as n, pickle; a = n.load(\"/fern/ck/s.npy\"); "
      "m = n.load(\"/fern/ck/s.npy\", mmap_mode=\"r\"); p = pickle.load(open(\"/fern/ck/p.pkl\", \"rb\")); "
      "print(int(a.sum()), int(m[12345]), int(p[\"a\"].sum()), p[\"s\"])'");
  ASSERT_EQ(load.rc, 0);
  const long long n = 1LL << 21;
  EXPECT_EQ(load.out, std::to_string(n * (n - 1) / 2) + " 12345 499500 x\n");
}

// fio writes with each engine the issue names and verifies its own crc32c
// headers after two nodes are gone.
TEST_F(Legacy, FioVerify) {
  if (!Have("fio")) GTEST_SKIP() << "fio not installed";
  // No verify state files: fio would leave them in the working directory.
  const std::string common =
      "fio --thread --bs=1M --size=16M --verify=crc32c --verify_state_save=0 --output=/dev/null ";
  const std::vector<std::string> engines = {"psync", "pvsync2", "mmap"};
  std::string writes = "mkdir -p /fern/ck";
  for (const auto& e : engines) {
    writes += " && " + common + "--name=" + e + " --filename=/fern/ck/" + e + " --ioengine=" + e + " --rw=write";
  }
  ASSERT_EQ(Run(writes).rc, 0);
  // A corrupted copy must fail fio's own verification: the check has teeth.
  ASSERT_EQ(Run("cp /fern/ck/psync $W/f && printf 'XXXX' | dd of=$W/f bs=1 seek=100000 conv=notrunc 2>/dev/null"
                " && cp $W/f /fern/ck/bad")
                .rc,
            0);
  KillTwo();
  for (const auto& e : engines) {
    EXPECT_EQ(Run(common + "--name=" + e + " --filename=/fern/ck/" + e + " --ioengine=" + e +
                  " --rw=read --verify_only")
                  .rc,
              0)
        << e;
  }
  EXPECT_NE(Run(common + "--name=psync --filename=/fern/ck/bad --ioengine=psync --rw=read --verify_only").rc, 0);
}

TEST_F(Legacy, CxxStreams) {
  const std::string prog = FERN_CXX_CHECKPOINT;
  const std::string write = prog + " write /fern/ck/cxx.bin 1234567 99";
  ASSERT_EQ(Run("mkdir -p /fern/ck && " + write).rc, 0);
  ASSERT_EQ(Plain("mkdir -p /fern/ck && " + write).rc, 0);
  KillTwo();
  EXPECT_EQ(Run("sha256sum < /fern/ck/cxx.bin").out, Sha(work_ + "/plain/ck/cxx.bin"));
  auto restarted = Run(prog + " read /fern/ck/cxx.bin");
  ASSERT_EQ(restarted.rc, 0);
  EXPECT_EQ(restarted.out, Plain(prog + " read /fern/ck/cxx.bin").out);
  EXPECT_EQ(restarted.out.rfind("1234567 ", 0), 0u) << restarted.out;
}

TEST_F(Legacy, Hdf5ImportRepackDump) {
  if (!Have("h5import") || !Have("h5repack") || !Have("h5dump")) GTEST_SKIP() << "hdf5-tools not installed";
  {
    std::ofstream txt(work_ + "/h5.txt");
    for (int i = 0; i < 20000; ++i) txt << i * 0.25 << (i % 100 == 99 ? "\n" : " ");
    std::ofstream(work_ + "/h5.cfg") << "PATH /grid/temperature\nINPUT-CLASS TEXTFP\nRANK 2\n"
                                        "DIMENSION-SIZES 200 100\nOUTPUT-CLASS FP\nOUTPUT-SIZE 64\n"
                                        "OUTPUT-ARCHITECTURE IEEE\nOUTPUT-BYTE-ORDER LE\n";
  }
  // h5import creates the file, h5repack reads it and writes a compressed copy
  // (HDF5 opens, flocks, seeks and rewrites its superblock in place).
  const std::string make = "mkdir -p /fern/h5 && h5import $W/h5.txt -c $W/h5.cfg -o /fern/h5/a.h5"
                           " && h5repack -f GZIP=6 /fern/h5/a.h5 /fern/h5/b.h5";
  ASSERT_EQ(Run(make).rc, 0);
  ASSERT_EQ(Plain(make).rc, 0);
  KillTwo();
  // The dump's first line names the file; the rest is the data.
  for (const char* f : {"a.h5", "b.h5"}) {
    const std::string dump = std::string("h5dump /fern/h5/") + f + " | tail -n +2";
    auto got = Run(dump);
    ASSERT_EQ(got.rc, 0) << f;
    EXPECT_EQ(got.out, Plain(dump).out) << f;
    EXPECT_NE(got.out.find("4999.75"), std::string::npos) << f;
  }
}

// `..` is resolved lexically at the mount boundary: it never reaches a name
// outside the fern-ec namespace through the daemon, and leaving the mount
// with `..` lands on the real file system with the caller's own rights.
TEST_F(Legacy, DotDotCannotEscapeTheMount) {
  ASSERT_EQ(Run("mkdir -p /fern/a && echo in > /fern/a/../b.txt && echo out > /fern/a/../..$W/escaped.txt").rc, 0);
  EXPECT_EQ(Run("cat /fern/b.txt").out, "in\n");
  EXPECT_EQ(Sh("cat " + work_ + "/escaped.txt").out, "out\n");  // a real file, written by the program itself
  auto listing = Sh(Cli() + " ls / --root " + root_).out;
  EXPECT_NE(listing.find("b.txt"), std::string::npos) << listing;
  EXPECT_EQ(listing.find("escaped"), std::string::npos) << listing;
  EXPECT_EQ(Run("cat /fern/../etc/hostname").out, Sh("cat /etc/hostname").out);
  // The daemon itself refuses a namespace path with `..` (a client that
  // skips the preload's normalization).
  EXPECT_NE(Sh(Cli() + " put " + work_ + "/escaped.txt /../x --root " + root_ + " 2>/dev/null").rc, 0);
}

TEST_F(Legacy, Sqlite3Wal) {
  if (!Have("sqlite3")) GTEST_SKIP() << "sqlite3 not installed";
  ASSERT_EQ(Run("mkdir -p /fern/db && sqlite3 /fern/db/t.db 'PRAGMA journal_mode=WAL; "
                "CREATE TABLE t(x INTEGER); WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 "
                "FROM c WHERE i < 5000) INSERT INTO t SELECT i FROM c;' >/dev/null")
                .rc,
            0);
  KillTwo();
  auto got = Run("sqlite3 /fern/db/t.db 'SELECT count(*), sum(x) FROM t;'");
  ASSERT_EQ(got.rc, 0);
  EXPECT_EQ(got.out, "5000|12502500\n");
}

TEST_F(Legacy, LsStatMvRm) {
  ASSERT_EQ(Run("mkdir -p /fern/d && cp $W/src.bin /fern/d/a && echo hi > /fern/d/b").rc, 0);
  EXPECT_EQ(Run("ls /fern/d").out, "a\nb\n");
  EXPECT_EQ(Run("stat -c %s /fern/d/a").out, std::to_string(std::filesystem::file_size(work_ + "/src.bin")) + "\n");
  ASSERT_EQ(Run("mv /fern/d/a /fern/d/c").rc, 0);
  EXPECT_EQ(Run("ls /fern/d").out, "b\nc\n");
  EXPECT_NE(Run("cat /fern/d/a 2>/dev/null").rc, 0);
  ASSERT_EQ(Run("rm /fern/d/b").rc, 0);
  EXPECT_EQ(Run("ls /fern/d").out, "c\n");
  KillTwo();
  EXPECT_EQ(Run("sha256sum < /fern/d/c").out, Sha(work_ + "/src.bin"));
  EXPECT_EQ(Run("test -e /fern/d/b && echo there || echo gone").out, "gone\n");
}

// FERN_EC_COMMIT=async: close returns once the daemon holds the bytes. A
// reader on the same node still sees them at once, `fern-ec wait` returns
// when they are protected, and a commit that fails later is reported by
// `fern-ec wait`, by status and by the next close of that path; the
// previous version stays readable.
TEST_F(Legacy, AsyncCommit) {
  // In the environment of `fern-ec run`, so the shell's own redirections are
  // async too.
  auto async = [this](const std::string& script) { return Run(script, "FERN_EC_COMMIT=async "); };
  const std::string wait = Cli() + " wait --root " + root_ + " --node 1";
  ASSERT_EQ(async("cp $W/src.bin /fern/a.bin && sha256sum < /fern/a.bin").out, Sha(work_ + "/src.bin"));
  ASSERT_EQ(Sh(wait).rc, 0);
  KillTwo();
  EXPECT_EQ(Run("sha256sum < /fern/a.bin").out, Sha(work_ + "/src.bin"));
  // With 4 of 6 nodes left no stripe can be placed on k+m nodes: the commit
  // fails after close has returned.
  ASSERT_EQ(async("echo replaced > /fern/a.bin").rc, 0);
  auto waited = Sh(wait + " /a.bin 2>&1");
  EXPECT_NE(waited.rc, 0) << waited.out;
  EXPECT_NE(waited.out.find("asynchronous commit of /a.bin failed"), std::string::npos) << waited.out;
  EXPECT_NE(Sh(Cli() + " status --json --root " + root_).out.find("\"async_failed\": 1"), std::string::npos);
  EXPECT_EQ(Run("sha256sum < /fern/a.bin").out, Sha(work_ + "/src.bin"));  // the previous version
  EXPECT_EQ(Sh(wait).rc, 0);  // reported once
  // A failure nobody waited for is reported by the next close of the path.
  ASSERT_EQ(async("echo again > /fern/a.bin").rc, 0);
  Sh(Cli() + " stat /a.bin --root " + root_ + " --node 1 >/dev/null");  // waits for it, takes nothing
  auto closed = async("cp $W/src.bin /fern/a.bin 2>&1 || echo cp-failed");
  EXPECT_NE(closed.out.find("failed to close"), std::string::npos) << closed.out;
  EXPECT_NE(closed.out.find("cp-failed"), std::string::npos) << closed.out;
}

// LAMMPS writes a restart file mid-run and a second process continues from
// it: the continued run's thermodynamic output must equal the uninterrupted
// run's, step for step. Opt-in (FERN_LAMMPS=1; `scripts/setup.sh
// --with-lammps` installs it, with Open MPI).
TEST_F(Legacy, LammpsWriteRestartReadRestart) {
  const char* want = std::getenv("FERN_LAMMPS");
  if (!want || std::string(want) != "1") GTEST_SKIP() << "opt-in: FERN_LAMMPS=1";
  if (!Have("lmp")) GTEST_SKIP() << "lmp not installed (scripts/setup.sh --with-lammps)";
  std::ofstream(work_ + "/in.melt") << "units lj\natom_style atomic\nlattice fcc 0.8442\n"
                                       "region box block 0 10 0 10 0 10\ncreate_box 1 box\n"
                                       "create_atoms 1 box\nmass 1 1.0\n"
                                       "velocity all create 3.0 87287 loop geom\n"
                                       "pair_style lj/cut 2.5\npair_coeff 1 1 1.0 1.0 2.5\n"
                                       "neighbor 0.3 bin\nneigh_modify every 20 delay 0 check no\n"
                                       "fix 1 all nve\nthermo 50\nrun 100\n"
                                       "write_restart ${DIR}/melt.restart\nrun 100\n";
  std::ofstream(work_ + "/in.restart") << "read_restart ${DIR}/melt.restart\n"
                                          "pair_style lj/cut 2.5\npair_coeff 1 1 1.0 1.0 2.5\n"
                                          "neighbor 0.3 bin\nneigh_modify every 20 delay 0 check no\n"
                                          "fix 1 all nve\nthermo 50\nrun 100\n";
  const std::string env = "export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; ";
  // The thermo lines of steps after 100 (the part the restart must reproduce).
  const std::string thermo = " -log none 2>&1 | awk '$1 ~ /^[0-9]+$/ && $1 > 100 && NF == 6'";
  auto first = Run(env + "mkdir -p /fern/lmp && lmp -in $W/in.melt -var DIR /fern/lmp" + thermo);
  ASSERT_EQ(first.rc, 0);
  ASSERT_EQ(std::count(first.out.begin(), first.out.end(), '\n'), 2) << first.out;  // steps 150, 200
  KillTwo();
  auto continued = Run(env + "lmp -in $W/in.restart -var DIR /fern/lmp" + thermo);
  ASSERT_EQ(continued.rc, 0);
  EXPECT_EQ(continued.out, first.out);
  EXPECT_EQ(Plain(env + "mkdir -p /fern/lmp && lmp -in $W/in.melt -var DIR /fern/lmp" + thermo).out, first.out);
}

TEST_F(Legacy, KilledWriterLeavesThePreviousCheckpoint) {
  ASSERT_EQ(Run("cp $W/src.bin /fern/ck.bin").rc, 0);
  // The next checkpoint: half written, then the writer is SIGKILLed.
  Run("/usr/bin/python3 -c 'import os; f = open(\"/fern/ck.bin\", \"wb\"); f.write(b\"new\" * 100000); "
      "f.flush(); os.kill(os.getpid(), 9)'");
  KillTwo();
  EXPECT_EQ(Run("sha256sum < /fern/ck.bin").out, Sha(work_ + "/src.bin"));
}

TEST_F(Legacy, OtherUsersCannotReadA0600File) {
  ASSERT_EQ(Run("umask 077; cp $W/src.bin /fern/secret").rc, 0);
  auto as_nobody = Run("cat /fern/secret > /dev/null", "setpriv --reuid=65534 --regid=65534 --clear-groups ");
  EXPECT_NE(as_nobody.rc, 0);
  auto msg = Sh("setpriv --reuid=65534 --regid=65534 --clear-groups " + Cli() + " run --root " + root_ +
                " -- /bin/cat /fern/secret 2>&1 >/dev/null");
  EXPECT_NE(msg.out.find("Permission denied"), std::string::npos) << msg.out;
  EXPECT_EQ(Run("sha256sum < /fern/secret").out, Sha(work_ + "/src.bin"));  // root still reads it
}

}  // namespace
