import Boot
import GuestMemory
import VMConfig

/// A config file's text (no file checks: the paths it names are not read).
enum ConfigTarget {
    static func run(_ data: [UInt8]) {
        let text = String(decoding: data, as: UTF8.self)
        switch ConfigLoader.parse(text, baseDirectory: "/nonexistent", checkFiles: false) {
        case let .failure(e):
            precondition(!e.issues.isEmpty, "a refused config names no problem")
        case .success:
            break
        }
    }
}

/// A kernel image, parsed, and what parses loaded, with a small initramfs
/// and a command line, into 64 MiB of memory that keeps nothing: what `run`
/// and `check` do with kernel.path.
enum KernelTarget {
    static let map = GuestMemoryMap(ramBytes: 64 << 20)

    static func run(_ data: [UInt8]) {
        guard let image = try? KernelImage.parse(data) else { return }
        _ = image.summary
        _ = try? LinuxLoader.load(kernel: image, initrd: [0x1F, 0x8B, 0, 0], cmdline: "console=ttyS0", vcpus: 2,
                                  memoryMap: map, rsdpAddress: 0xE0000, into: DiscardingGuestMemory(map: map))
    }
}

/// An initramfs, as `run` checks it before loading.
enum InitramfsTarget {
    static func run(_ data: [UInt8]) {
        if let archives = try? Initramfs.validate(data) {
            _ = archives.map(\.description)
        }
    }
}
