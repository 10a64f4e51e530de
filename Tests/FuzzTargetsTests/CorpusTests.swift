import Foundation
import FuzzTargets
import TestFakes
import XCTest

/// The fuzz targets without libFuzzer: every input of every corpus (the
/// seeds and each crash found, kept as a regression input) runs once, and
/// each target also takes random and truncated inputs. A trap fails the whole
/// test process, so passing means none trapped.
final class CorpusTests: XCTestCase {
    static let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../Fuzz/corpus").standardized

    func inputs(_ target: String) -> [URL] {
        let dir = Self.corpus.appendingPathComponent(target)
        return ((try? FileManager.default.contentsOfDirectory(at: dir, includingPropertiesForKeys: nil)) ?? [])
            .sorted { $0.lastPathComponent < $1.lastPathComponent }
    }

    func testEveryTargetHasASeedCorpus() {
        XCTAssertEqual(FuzzTargets.all.count, 12)
        for t in FuzzTargets.all {
            XCTAssertFalse(inputs(t.name).isEmpty, "Fuzz/corpus/\(t.name) is empty (python3 Fuzz/make-seeds.py)")
        }
    }

    func testCorporaReplay() throws {
        var ran = 0
        for t in FuzzTargets.all {
            for url in inputs(t.name) {
                t.run([UInt8](try Data(contentsOf: url)))
                ran += 1
            }
        }
        XCTAssertGreaterThan(ran, 20)
    }

    /// Random bytes, and each seed cut at random places and with random
    /// bytes changed: a few hundred runs per target.
    func testRandomAndMutatedInputs() throws {
        var rng = SplitMix64(seed: 0xF022_0001)
        for t in FuzzTargets.all {
            let seeds = try inputs(t.name).map { [UInt8](try Data(contentsOf: $0)) }
            for i in 0..<200 {
                var input: [UInt8]
                if i % 2 == 0 || seeds.isEmpty {
                    input = (0..<Int(rng.next() % 600)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
                } else {
                    input = seeds[Int(rng.next() % UInt64(seeds.count))]
                    for _ in 0..<(1 + Int(rng.next() % 8)) where !input.isEmpty {
                        input[Int(rng.next() % UInt64(input.count))] = UInt8(truncatingIfNeeded: rng.next())
                    }
                    if i % 4 == 1 { input = Array(input.prefix(Int(rng.next() % UInt64(input.count + 1)))) }
                }
                t.run(input)
            }
        }
    }
}
