# fork() in a Crystal program whose objects live in C library memory, while
# a C library thread allocates: the child collects, keeps those objects and
# runs a callback on a new C library thread. Crystal's GC.init asks libgc to
# handle fork (GC_set_handle_fork(1), before GC_init): with the shim, libgc
# is still initialized by Crystal, so that request is what libgc follows.
require "./support"

lib LibC
  fun waitpid(pid : PidT, status : Int*, options : Int) : PidT
end

KEPT = 2000
KEPT.times { |i| LibStash.keep(0, Tracked.new(i).as(Void*)) }

def lost_in_library : Int32
  lost = 0
  KEPT.times { |i| lost += 1 unless LibStash.get(0, i).as(Tracked).tag == i }
  lost
end

module Background
  class_property? stop = false
end

# A C library thread that allocates Crystal objects until told to stop. It
# blocks SIGCHLD: Crystal 1.6's SIGCHLD handler allocates, and if a child's
# exit lands on this thread while it collects (holding libgc's lock), the
# handler waits for that lock for ever, with or without the shim.
background = ->(arg : Void*) do
  set = uninitialized LibC::SigsetT
  LibC.sigemptyset(pointerof(set))
  LibC.sigaddset(pointerof(set), Signal::CHLD.value)
  LibC.pthread_sigmask(0, pointerof(set), nil) # 0: SIG_BLOCK
  ring = Array(Tracked?).new(16, nil)
  n = 0
  until Background.stop?
    ring[n % 16] = Tracked.new(n)
    n += 1
  end
  Pointer(Void).null
end
worker = LibStash.start(0, background, Pointer(Void).null)
sleep 0.02

stash_callback = ->(arg : Void*) { Pointer(Void).new(hold_and_collect.to_u64) }
lost = 0
3.times do |k|
  pid = LibC.fork
  if pid == 0
    collect_hard
    child_lost = lost_in_library
    child_lost += LibStash.wait(LibStash.start(0, stash_callback, Pointer(Void).null)).address.to_i32
    LibC._exit(child_lost == 0 ? 0 : 1)
  end
  status = 0
  if pid < 0 || LibC.waitpid(pid, pointerof(status), 0) != pid || status != 0
    puts "child #{k} failed (status #{status})"
    lost += 1
  end
end
Background.stop = true
LibStash.wait(worker)
collect_hard
finish(lost + lost_in_library)
