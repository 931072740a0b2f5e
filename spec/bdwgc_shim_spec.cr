# Real Crystal programs (spec/programs), each built without the shard, where
# it must fail, and with it, where it must pass; with the shared libgc (as
# Debian's crystal links it) and a static libgc.a (as Crystal's official
# builds do). Needs `cargo build --release` first (scripts/test does it).
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

  def self.run!(command : String, args : Array(String), env = {} of String => String)
    output = IO::Memory.new
    status = Process.run(command, args, env: env, output: output, error: output)
    raise "#{command} #{args.join(" ")} failed:\n#{output}" unless status.success?
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
    fail "#{program} passes without the shim, so the spec proves nothing:\n#{outcome_without.output}" if outcome_without.passed?
    outcome_with = run(build(program, true, static_gc, mt, release), workers)
    fail "#{program} fails with the shim:\n#{outcome_with.output}" unless outcome_with.passed?
    fail "#{program}: the shim is not active:\n#{outcome_with.output}" unless outcome_with.shim_active?
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
    app = File.join(SpecPrograms::BUILD, "app")
    Dir.mkdir_p(File.join(app, "lib"))
    link = File.join(app, "lib", "bdwgc_shim")
    File.symlink(SpecPrograms::ROOT, link) unless File.exists?(link)
    File.write(File.join(app, "main.cr"), <<-CRYSTAL)
      require "bdwgc_shim"
      puts BdwgcShim.active? ? "shim=active" : "shim=absent"
      CRYSTAL
    exe = File.join(app, "main")
    output = IO::Memory.new
    status = Process.run("crystal", ["build", "main.cr", "-o", exe], chdir: app, output: output, error: output)
    fail "build failed:\n#{output}" unless status.success?
    SpecPrograms.run(exe).output.should contain("shim=active")
  end

  it "works in a --release build" do
    SpecPrograms.check("thread_callbacks", static_gc: false, release: true)
  end
end
