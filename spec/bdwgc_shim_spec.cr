# Real Crystal programs (spec/programs), each built without the shard, where
# it must fail, and with it, where it must pass; with the shared libgc (as
# Debian's crystal links it) and a static libgc.a (as Crystal's official
# builds do). Needs `cargo build --release` first (scripts/test does it).
# Then the same on aarch64 under qemu-user (Aarch64Programs), which builds
# the shim's aarch64 archive itself.
require "spec"
require "../src/bdwgc_shim"

module SpecPrograms
  ROOT  = File.expand_path("..", __DIR__)
  BUILD = File.join(ROOT, "target", "crystal-spec")

  @@lib_dir : String?
  @@static_gc_dir : String?

  record Outcome, status : Int32, output : String do
    def passed? : Bool
      status == 0 && output.lines.includes?("RESULT ok")
    end

    def shim_active? : Bool
      output.lines.any?(&.starts_with?("shim=active"))
    end
  end

  # The repository's GC-unaware C library, built once.
  def self.lib_dir : String
    @@lib_dir ||= begin
      dir = File.join(BUILD, "lib")
      Dir.mkdir_p(dir)
      run!("cc", ["-O2", "-fPIC", "-shared", File.join(ROOT, "tests/c/lib/stash.c"),
                  "-o", File.join(dir, "libstash.so"), "-lpthread"])
      dir
    end
  end

  # A folder that holds only a static libgc.a, for CRYSTAL_LIBRARY_PATH.
  def self.static_gc_dir : String
    @@static_gc_dir ||= begin
      dir = File.join(BUILD, "static-gc")
      Dir.mkdir_p(dir)
      archive = Dir.glob("/usr/lib/*/libgc.a").first? || raise "no libgc.a: apt-get install libgc-dev"
      File.copy(archive, File.join(dir, "libgc.a"))
      dir
    end
  end

  # Runs a command that must succeed; returns what it printed.
  def self.run!(command : String, args : Array(String), env = {} of String => String,
                chdir : String? = nil) : String
    output = IO::Memory.new
    status = Process.run(command, args, env: env, output: output, error: output, chdir: chdir)
    raise "#{command} #{args.join(" ")} failed:\n#{output}" unless status.success?
    output.to_s
  end

  def self.build(program : String, with_shim : Bool, static_gc : Bool,
                 mt : Bool = false, release : Bool = false) : String
    name = [program, with_shim ? "with" : "without", static_gc ? "static-gc" : "shared-gc",
            mt ? "mt" : nil, release ? "release" : nil].compact.join("-")
    exe = File.join(BUILD, name)
    args = ["build", File.join(ROOT, "spec/programs/#{program}.cr"), "-o", exe,
            "--link-flags", "-L#{lib_dir} -Wl,-rpath,#{lib_dir}"]
    args << "-Dwith_shim" if with_shim
    args << "-Dpreview_mt" if mt
    args << "--release" if release
    env = {} of String => String
    env["CRYSTAL_LIBRARY_PATH"] = static_gc_dir if static_gc
    run!("crystal", args, env)
    exe
  end

  def self.run(exe : String, workers = 1) : Outcome
    output = IO::Memory.new
    env = {"GC_MARKERS" => "2", "CRYSTAL_WORKERS" => workers.to_s}
    status = Process.run("timeout", ["-k", "5", "120", exe], env: env, output: output, error: output)
    Outcome.new(status.exit_code, output.to_s)
  end

  # Builds `program` without and with the shard and checks both outcomes.
  def self.check(program : String, static_gc : Bool, mt = false, release = false)
    workers = mt ? 4 : 1
    outcome_without = run(build(program, false, static_gc, mt, release), workers)
    outcome_with = run(build(program, true, static_gc, mt, release), workers)
    check_outcomes(program, outcome_without, outcome_with)
  end

  def self.check_outcomes(program : String, outcome_without : Outcome, outcome_with : Outcome)
    fail "#{program} passes without the shim, so the spec proves nothing:\n#{outcome_without.output}" if outcome_without.passed?
    fail "#{program} fails with the shim:\n#{outcome_with.output}" unless outcome_with.passed?
    fail "#{program}: the shim is not active:\n#{outcome_with.output}" unless outcome_with.shim_active?
  end
end

# The same programs cross-built for 64-bit Arm and run under qemu-user, with
# Debian's multiarch arm64 libraries under /. Needs gcc-aarch64-linux-gnu,
# qemu-user, libc6:arm64, libgc-dev:arm64, and the runtime libraries of
# libevent (libevent-2.1-7:arm64, libevent-pthreads-2.1-7:arm64) and GLib
# (libglib2.0-0:arm64), never libevent-dev:arm64 (apt would remove crystal
# to install it); and Rust's aarch64-unknown-linux-gnu target for the shim's
# archive (scripts/install-deps --all installs them all).
module Aarch64Programs
  RUST_TARGET    = "aarch64-unknown-linux-gnu"
  CRYSTAL_TARGET = "aarch64-linux-gnu"
  CC             = "aarch64-linux-gnu-gcc"
  QEMU           = "qemu-aarch64"
  ARM64_LIBS     = "/usr/lib/aarch64-linux-gnu"
  # Without their arm64 -dev packages (see above), the runtime libraries
  # are linked by file name.
  RUNTIME_LIBS = {
    "-levent"          => "libevent-2.1.so.7",
    "-levent_pthreads" => "libevent_pthreads-2.1.so.7",
    "-lglib-2.0"       => "libglib-2.0.so.0",
  }
  BUILD = File.join(SpecPrograms::BUILD, "aarch64")

  @@shim_lib_dir : String?
  @@lib_dir : String?
  @@objects = {} of {String, Bool, Bool} => Array(String)

  # Fails, or with BDWGC_SHIM_SKIP_AARCH64=1 marks the example pending,
  # when the cross toolchain or the arm64 libraries are not installed.
  def self.require_toolchain
    missing = [CC, QEMU].reject { |tool| Process.find_executable(tool) }
    missing += ["libgc.so", "libgc.a"].concat(RUNTIME_LIBS.values).map { |name| File.join(ARM64_LIBS, name) }.reject { |path| File.exists?(path) }
    return if missing.empty?
    pending!("aarch64: #{missing.join(", ")} missing (BDWGC_SHIM_SKIP_AARCH64=1)") if ENV["BDWGC_SHIM_SKIP_AARCH64"]? == "1"
    fail "the aarch64 specs need #{missing.join(", ")}: run `scripts/install-deps --all` as root " \
         "(CI installs them), or set BDWGC_SHIM_SKIP_AARCH64=1 to skip these specs"
  end

  # The folder of the shim's aarch64 archive, built (or found up to date)
  # once, so that it matches the sources as the host archive does.
  def self.shim_lib_dir : String
    @@shim_lib_dir ||= begin
      SpecPrograms.run!("cargo", ["build", "--release", "--target", RUST_TARGET, "-p", "bdwgc-shim-c"],
        chdir: SpecPrograms::ROOT)
      File.join(SpecPrograms::ROOT, "target", RUST_TARGET, "release")
    end
  end

  # The repository's GC-unaware C library, built for aarch64 once.
  def self.lib_dir : String
    @@lib_dir ||= begin
      dir = File.join(BUILD, "lib")
      Dir.mkdir_p(dir)
      SpecPrograms.run!(CC, ["-O2", "-fPIC", "-shared", File.join(SpecPrograms::ROOT, "tests/c/lib/stash.c"),
                             "-o", File.join(dir, "libstash.so"), "-lpthread"])
      dir
    end
  end

  # Cross-compiles `program` once (the shared and the static libgc link the
  # same object) and returns the link command crystal printed for it.
  def self.link_command(program : String, with_shim : Bool, mt : Bool) : Array(String)
    @@objects[{program, with_shim, mt}] ||= begin
      Dir.mkdir_p(BUILD)
      output = File.join(BUILD, [program, with_shim ? "with" : "without", mt ? "mt" : nil].compact.join("-"))
      args = ["build", "--cross-compile", "--target", CRYSTAL_TARGET,
              File.join(SpecPrograms::ROOT, "spec/programs/#{program}.cr"), "-o", output]
      args << "-Dwith_shim" if with_shim
      args << "-Dpreview_mt" if mt
      env = with_shim ? {"BDWGC_SHIM_LIB_DIR" => shim_lib_dir} : {} of String => String
      printed = SpecPrograms.run!("crystal", args, env)
      line = printed.lines.find(&.starts_with?("cc ")) || raise "no link command in:\n#{printed}"
      Process.parse_arguments(line)
    end
  end

  # Links the object with the cross compiler: crystal's link line, with the
  # host's library folders left out and runtime libraries by file name.
  def self.build(program : String, with_shim : Bool, static_gc : Bool, mt : Bool) : String
    exe = File.join(BUILD, [program, with_shim ? "with" : "without", static_gc ? "static-gc" : "shared-gc",
                            mt ? "mt" : nil].compact.join("-"))
    args = link_command(program, with_shim, mt)[1..].reject(&.starts_with?("-L")).map do |arg|
      if file = RUNTIME_LIBS[arg]?
        "-l:#{file}"
      elsif arg == "-lgc" && static_gc
        File.join(ARM64_LIBS, "libgc.a")
      else
        arg
      end
    end
    args[args.index!("-o") + 1] = exe
    args += ["-L#{lib_dir}", "-Wl,-rpath,#{lib_dir}"]
    SpecPrograms.run!(CC, args)
    exe
  end

  # Runs `exe` under the emulator. With the shim each program takes a
  # second or two there; without it some hang rather than abort (preview_mt
  # did, 1 run in 2), and a minute is enough to call that a failure.
  def self.run(exe : String, workers : Int32) : SpecPrograms::Outcome
    output = IO::Memory.new
    env = {"GC_MARKERS" => "2", "CRYSTAL_WORKERS" => workers.to_s}
    status = Process.run("timeout", ["-k", "5", "60", QEMU, "-L", "/", exe], env: env, output: output, error: output)
    SpecPrograms::Outcome.new(status.exit_code, output.to_s)
  end

  def self.check(program : String, static_gc : Bool, mt = false)
    require_toolchain
    workers = mt ? 4 : 1
    outcome_without = run(build(program, false, static_gc, mt), workers)
    outcome_with = run(build(program, true, static_gc, mt), workers)
    SpecPrograms.check_outcomes("#{program} (aarch64)", outcome_without, outcome_with)
  end
end

# Programs that take the shard in the ways its README gives.
module ShardApps
  # A one-line program in a folder of its own, built as its README says.
  def self.build(name : String, env = {} of String => String, &) : String
    app = File.join(SpecPrograms::BUILD, name)
    Dir.mkdir_p(app)
    yield app
    File.write(File.join(app, "main.cr"), <<-CRYSTAL)
      require "bdwgc_shim"
      puts BdwgcShim.active? ? "shim=active" : "shim=absent"
      CRYSTAL
    exe = File.join(app, "main")
    output = IO::Memory.new
    status = Process.run("crystal", ["build", "main.cr", "-o", exe], env: env, chdir: app, output: output, error: output)
    fail "build failed:\n#{output}" unless status.success?
    exe
  end
end

describe BdwgcShim do
  it "reports itself active, with its version and counters" do
    BdwgcShim.active?.should be_true
    BdwgcShim.version.should eq(BdwgcShim::VERSION)
    BdwgcShim.stats.allocations_routed.should be > 0
  end

  {% for gc in [:shared, :static] %}
    describe "with the {{gc.id}} libgc" do
      it "keeps Crystal objects that only C library memory refers to (repo library, GLib hash table)" do
        SpecPrograms.check("keep_objects", static_gc: {{gc == :static}})
      end

      it "runs callbacks on C library threads (repo library, GLib thread pool)" do
        SpecPrograms.check("thread_callbacks", static_gc: {{gc == :static}})
      end

      it "forks while a C library thread allocates; the child collects (libgc initialized by Crystal)" do
        SpecPrograms.check("fork_child", static_gc: {{gc == :static}})
      end

      it "runs preview_mt fibers on 4 workers while a C library thread calls back" do
        SpecPrograms.check("preview_mt", static_gc: {{gc == :static}}, mt: true)
      end
    end
  {% end %}

  it "is used as a shard: the dependency in lib/ and one require line" do
    exe = ShardApps.build("app") do |app|
      Dir.mkdir_p(File.join(app, "lib"))
      link = File.join(app, "lib", "bdwgc_shim")
      File.symlink(SpecPrograms::ROOT, link) unless File.exists?(link)
    end
    SpecPrograms.run(exe).output.should contain("shim=active")
  end

  # Debian's crystal comes without shards: CRYSTAL_PATH names the shard's
  # src folder in front of the compiler's own path.
  it "is used without shards: CRYSTAL_PATH names its src folder" do
    path = "#{File.join(SpecPrograms::ROOT, "src")}:#{SpecPrograms.run!("crystal", ["env", "CRYSTAL_PATH"]).strip}"
    exe = ShardApps.build("app-crystal-path", {"CRYSTAL_PATH" => path}) { }
    SpecPrograms.run(exe).output.should contain("shim=active")
  end

  it "works in a --release build" do
    SpecPrograms.check("thread_callbacks", static_gc: false, release: true)
  end

  # The same programs on aarch64: cross-compiled, linked with Debian's cross
  # gcc against the arm64 libgc and GLib, run under qemu-user.
  describe "on aarch64 under qemu-user" do
    {% for gc in [:shared, :static] %}
      describe "with the {{gc.id}} libgc" do
        it "keeps Crystal objects that only C library memory refers to (repo library, GLib hash table)" do
          Aarch64Programs.check("keep_objects", static_gc: {{gc == :static}})
        end

        it "runs callbacks on C library threads (repo library, GLib thread pool)" do
          Aarch64Programs.check("thread_callbacks", static_gc: {{gc == :static}})
        end

        it "forks while a C library thread allocates; the child collects" do
          Aarch64Programs.check("fork_child", static_gc: {{gc == :static}})
        end

        it "runs preview_mt fibers on 4 workers while a C library thread calls back" do
          Aarch64Programs.check("preview_mt", static_gc: {{gc == :static}}, mt: true)
        end
      end
    {% end %}
  end
end
