# Callbacks into Crystal on threads C libraries start: the repository's
# library in each of its ways, and GLib's thread pool. Each callback
# allocates, holds objects on its stack and collects.
require "./support"

module Lost
  class_getter count = Atomic(Int32).new(0)
end

stash_callback = ->(arg : Void*) { Pointer(Void).new(hold_and_collect.to_u64) }
[0, 1, 2, 3, 4, 6, 7].each do |mode|
  Lost.count.add(LibStash.wait(LibStash.start(mode, stash_callback, Pointer(Void).null)).address.to_i32)
end

pool_work = ->(data : Void*, user : Void*) { Lost.count.add(hold_and_collect(50)); nil }
pool = LibGLib.thread_pool_new(pool_work, nil, 4, 0, nil)
16.times { |i| LibGLib.thread_pool_push(pool, Pointer(Void).new((i + 1).to_u64), nil) }
LibGLib.thread_pool_free(pool, 0, 1)

finish(Lost.count.get)
