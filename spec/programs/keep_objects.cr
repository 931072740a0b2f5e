# Crystal objects kept only in memory of C libraries: the repository's
# GC-unaware library (every malloc-family allocator) and GLib's hash table.
require "./support"

PER_KIND = 1000
STASH_ALLOCATORS = 9

STASH_ALLOCATORS.times do |a|
  PER_KIND.times { |i| LibStash.keep(a, Tracked.new(a * 100_000 + i).as(Void*)) }
end
table = LibGLib.hash_table_new(nil, nil)
PER_KIND.times { |i| LibGLib.hash_table_insert(table, Pointer(Void).new((i + 1).to_u64), Tracked.new(i).as(Void*)) }

collect_hard

lost = 0
STASH_ALLOCATORS.times do |a|
  PER_KIND.times { |i| lost += 1 unless LibStash.get(a, i).as(Tracked).tag == a * 100_000 + i }
end
PER_KIND.times do |i|
  o = LibGLib.hash_table_lookup(table, Pointer(Void).new((i + 1).to_u64))
  lost += 1 unless o && o.as(Tracked).tag == i
end
finish(lost)
