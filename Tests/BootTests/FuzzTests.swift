import GuestMemory
import TestFakes
import XCTest
@testable import Boot

/// Feeds random and mutated images to the parser (and what parses to the
/// loader). Deterministic seed; the test fails on a trap, and also if the
/// mutations stop reaching the interesting paths.
final class FuzzTests: XCTestCase {
    func testTwoThousandMutatedImagesNeverTrap() throws {
        var rng = SplitMix64(seed: 0x5EED_B007)
        let bz = BzImageBuilder().build()
        let elf = ELFBuilder().build()
        var notes = ELFBuilder()
        notes.notesOnlyInSections = true
        let elfSections = notes.build()
        let seeds = [bz, elf, elfSections]
        let memory = TestMemory.flat(24 * TestMemory.mib)
        let map = GuestMemoryMap(ramBytes: 24 * TestMemory.mib)

        var parsed = 0
        var loaded = 0
        var errors: [String: Int] = [:]
        for iteration in 0..<2000 {
            var input: [UInt8]
            switch iteration % 6 {
            case 0, 1, 2:
                // Mutate a valid image, mostly in its headers.
                input = seeds[Int.random(in: 0..<seeds.count, using: &rng)]
                let flips = Int.random(in: 1...8, using: &rng)
                for _ in 0..<flips {
                    let hot = Bool.random(using: &rng)
                    let range = hot ? (input.first == 0x7F ? 0..<min(512, input.count) : 0x1F0..<0x270)
                                    : 0..<input.count
                    let index = Int.random(in: range, using: &rng)
                    input[index] = Bool.random(using: &rng) ? UInt8.random(in: 0...255, using: &rng)
                                                            : [0x00, 0xFF, 0x7F, 0x80][Int.random(in: 0..<4, using: &rng)]
                }
            case 3:
                // Overwrite one 8-byte header field with an extreme value.
                input = seeds[Int.random(in: 0..<seeds.count, using: &rng)]
                let offset = Int.random(in: 0..<(min(input.count, 0x270) - 8), using: &rng)
                input.put([UInt64.max, 0, 1 << 63, UInt64(UInt32.max)][Int.random(in: 0..<4, using: &rng)], at: offset)
            case 4:
                // Truncate a valid image anywhere.
                let seed = seeds[Int.random(in: 0..<seeds.count, using: &rng)]
                input = Array(seed[..<Int.random(in: 0..<seed.count, using: &rng)])
            default:
                // Random bytes, sometimes with a valid magic in front.
                input = (0..<Int.random(in: 0..<3000, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
                if input.count > 4, Bool.random(using: &rng) { input.replaceSubrange(0..<4, with: [0x7F, 0x45, 0x4C, 0x46]) }
                if input.count > 0x206, Bool.random(using: &rng) {
                    input.put(UInt16(0xAA55), at: 0x1FE)
                    input.put(UInt32(0x5372_6448), at: 0x202)
                }
            }

            do {
                let kernel = try KernelImage.parse(input)
                parsed += 1
                let initrd: [UInt8]? = Bool.random(using: &rng) ? [1, 2, 3, 4, 5] : nil
                _ = try LinuxLoader.load(kernel: kernel, initrd: initrd, cmdline: "console=ttyS0",
                                         vcpus: Int.random(in: 1...4, using: &rng), memoryMap: map, into: memory)
                loaded += 1
            } catch let error as BootError {
                XCTAssertFalse(error.description.isEmpty)
                // The enum case name: the label of the payload, or the case itself.
                let name = Mirror(reflecting: error).children.first?.label ?? "\(error)"
                errors[name, default: 0] += 1
            }
        }
        // The corpus must keep exercising both success and the main failure kinds.
        XCTAssertGreaterThan(parsed, 100, "too few mutated images parse: \(errors)")
        XCTAssertGreaterThan(loaded, 50, "too few parsed images load: \(errors)")
        for kind in ["truncated", "notAKernel", "invalidImage"] {
            XCTAssertGreaterThan(errors[kind, default: 0], 0, "no \(kind) errors: \(errors)")
        }
    }
}
