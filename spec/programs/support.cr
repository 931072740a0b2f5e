# Shared by the spec programs: the shard when built with -Dwith_shim, the
# repository's GC-unaware C library, GLib, and the closing lines the spec reads.
{% if flag?(:with_shim) %}
  require "../../src/bdwgc_shim"
{% end %}

@[Link("stash")]
lib LibStash
  fun keep = stash_keep(allocator : Int32, p : Void*) : Int32
  fun get = stash_get(allocator : Int32, index : LibC::SizeT) : Void*
  fun start = stash_start(mode : Int32, callback : Void* -> Void*, arg : Void*) : Void*
  fun wait = stash_wait(thread : Void*) : Void*
end

@[Link("glib-2.0")]
lib LibGLib
  fun hash_table_new = g_hash_table_new(hash : Void*, equal : Void*) : Void*
  fun hash_table_insert = g_hash_table_insert(table : Void*, key : Void*, value : Void*) : Int32
  fun hash_table_lookup = g_hash_table_lookup(table : Void*, key : Void*) : Void*
  fun thread_pool_new = g_thread_pool_new(func : Void*, Void* -> Void, user_data : Void*, max_threads : Int32, exclusive : Int32, error : Void*) : Void*
  fun thread_pool_push = g_thread_pool_push(pool : Void*, data : Void*, error : Void*) : Int32
  fun thread_pool_free = g_thread_pool_free(pool : Void*, immediate : Int32, wait : Int32) : Void
end

# An object whose loss shows: its tag is checked after collections.
class Tracked
  getter tag : Int32

  def initialize(@tag : Int32)
  end
end

def collect_hard
  3.times do
    GC.collect
    100_000.times { Tracked.new(-1) }
  end
end

# Allocates objects held only by this thread's stack, collects, checks them.
def hold_and_collect(count = 100) : Int32
  held = Array(Tracked).new(count) { |i| Tracked.new(i) }
  collect_hard
  lost = 0
  held.each_with_index { |o, i| lost += 1 unless o.tag == i }
  lost
end

def finish(lost : Int32)
  {% if flag?(:with_shim) %}
    puts "shim=#{BdwgcShim.active? ? "active" : "absent"} version=#{BdwgcShim.version} routed=#{BdwgcShim.stats.allocations_routed}"
  {% else %}
    puts "shim=absent"
  {% end %}
  puts "lost=#{lost}"
  puts "RESULT #{lost == 0 ? "ok" : "fail"}"
  exit(lost == 0 ? 0 : 1)
end
