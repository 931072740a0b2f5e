# bdwgc_shim: makes a Crystal program safe with C libraries that keep
# Crystal objects in their malloc memory or call back into Crystal from
# threads they start. `require "bdwgc_shim"` is all it takes: the shard links
# the static `libbdwgc_shim.a` (built by `cargo build --release`, which the
# shard's postinstall runs) into the program.

# BDWGC_SHIM_LIB_DIR, when set as crystal compiles, names the folder of the
# archive to link instead: a cross-build needs the target's archive
# (target/<triple>/release), not the host's.
{% begin %}
  {% lib_dir = env("BDWGC_SHIM_LIB_DIR") %}
  {% if lib_dir && !lib_dir.empty? %}
    @[Link(ldflags: "-Wl,--undefined=bdwgc_shim_is_active {{lib_dir.id}}/libbdwgc_shim.a")]
  {% else %}
    @[Link(ldflags: "-Wl,--undefined=bdwgc_shim_is_active {{__DIR__.id}}/../target/release/libbdwgc_shim.a")]
  {% end %}
  lib LibBdwgcShim
    struct Stats
      allocations_routed : UInt64
      allocations_before_init : UInt64
      allocations_fallback : UInt64
      threads_registered : UInt64
      deferred_frees : UInt64
      bytes_mapped : UInt64
      bytes_resident : UInt64
      bytes_in_use : UInt64
      bytes_free : UInt64
      bytes_purged : UInt64
    end

    fun version = bdwgc_shim_version : UInt8*
    fun is_active = bdwgc_shim_is_active : Int32
    fun get_stats = bdwgc_shim_get_stats(out : Stats*) : Void
  end
{% end %}

module BdwgcShim
  VERSION = "0.1.0"

  # The shim's counters: allocations routed through the collector, served
  # before it was initialized or by glibc as a fallback, threads registered.
  alias Stats = LibBdwgcShim::Stats

  # The version of the linked shim.
  def self.version : String
    String.new(LibBdwgcShim.version)
  end

  # True when the shim routes this process's allocations and threads through
  # the collector.
  def self.active? : Bool
    LibBdwgcShim.is_active != 0
  end

  def self.stats : Stats
    stats = Stats.new
    LibBdwgcShim.get_stats(pointerof(stats))
    stats
  end
end

# Crystal links a lib's flags only when one of its functions is used.
BdwgcShim.active?
