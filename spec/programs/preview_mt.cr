# Built with -Dpreview_mt and run with CRYSTAL_WORKERS=4: fibers allocate on
# every worker thread (which Crystal starts with GC_pthread_create) while a C
# library thread calls back into Crystal at the same time.
require "./support"

done = Channel(Int32).new
8.times do |f|
  spawn do
    kept = Array(Tracked).new
    lost = 0
    300.times do |i|
      kept << Tracked.new(f * 10_000 + i)
      Array(Int32).new(64) { |j| j }
      GC.collect if i % 100 == 0
    end
    kept.each_with_index { |o, i| lost += 1 unless o.tag == f * 10_000 + i }
    done.send(lost)
  end
end

callback = ->(arg : Void*) { Pointer(Void).new(hold_and_collect.to_u64) }
library_thread = LibStash.start(0, callback, Pointer(Void).null)

lost = 0
8.times { lost += done.receive }
lost += LibStash.wait(library_thread).address.to_i32
finish(lost)
