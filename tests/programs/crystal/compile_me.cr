# Built and run by Debian's Crystal compiler with the shim preloaded into
# the compiler (crates/bdwgc-shim-cli/tests/real_programs.rs). Prints only
# what its computation determines.
table = Hash(String, Int32).new
100_000.times { |i| table["key#{i}"] = i * 3 }
puts table.size, table["key77777"]
words = (1..20_000).map { |i| (i * 7919 % 10007).to_s(36) }
puts words.sort.first(3).join(","), words.uniq.size
channel = Channel(Int64).new
4.times { |f| spawn { channel.send((1_i64..250_000_i64).sum { |x| x * (f + 1) }) } }
puts (1..4).sum { channel.receive }
