import Boot
import GuestMemory
import HostSys
import VMConfig

/// The kernel and initramfs a config names, read and parsed the way `run`
/// boots them. `swiftvmm check` uses the same code, so a file `run` would
/// refuse is refused there first.
struct BootFiles {
    let kernel: KernelImage
    let initramfs: [UInt8]?
    let initramfsArchives: [Initramfs.Archive]

    /// Reads and parses both files: a `MachineError.kernel` naming the file
    /// and what is wrong with it.
    static func read(_ config: VMConfig) throws -> BootFiles {
        let image = try readKernel(config)
        let (bytes, archives) = try readInitramfs(config)
        return BootFiles(kernel: image, initramfs: bytes, initramfsArchives: archives)
    }

    static func readKernel(_ config: VMConfig) throws -> KernelImage {
        do { return try KernelImage.parse(KernelFile(try ReadOnlyFile(config.kernelPath))) } catch {
            throw MachineError.kernel("kernel \(config.kernelPath): \(error)")
        }
    }

    /// The initramfs and its archives; nil and none when the config has none.
    static func readInitramfs(_ config: VMConfig) throws -> ([UInt8]?, [Initramfs.Archive]) {
        guard let p = config.initramfsPath else { return (nil, []) }
        do {
            let bytes = try HostFiles.readAll(p)
            return (bytes, try Initramfs.validate(bytes))
        } catch {
            throw MachineError.kernel("initramfs \(p): \(error)")
        }
    }
}

/// What `swiftvmm check` finds wrong with the boot files of a config that is
/// otherwise valid, with the key path (or option) that named each one.
public enum BootFilesCheck {
    public struct KeyPaths: Sendable {
        public var kernel = "kernel.path", initramfs = "kernel.initramfs", cmdline = "kernel.cmdline"
        public var memory = "machine.memory", vcpus = "machine.vcpus"
        public init() {}
    }

    /// Parses the kernel and initramfs as `run` does and loads them, with the
    /// command line and the boot structures, into memory of the configured
    /// size that keeps nothing: whatever `run`'s loader would refuse. On
    /// success, a summary such as "bzImage (boot protocol 2.15), initramfs
    /// gzip-compressed cpio".
    public static func check(_ config: VMConfig, keys: KeyPaths = KeyPaths()) -> Result<String, ConfigError> {
        let files: BootFiles
        do {
            let kernel: KernelImage
            do { kernel = try BootFiles.readKernel(config) } catch {
                return .failure(ConfigError(issues: [ConfigIssue(keyPath: keys.kernel, message: "\(error)")]))
            }
            let (bytes, archives) = try BootFiles.readInitramfs(config)
            files = BootFiles(kernel: kernel, initramfs: bytes, initramfsArchives: archives)
        } catch {
            return .failure(ConfigError(issues: [ConfigIssue(keyPath: keys.initramfs, message: "\(error)")]))
        }
        let map = GuestMemoryMap(ramBytes: config.memoryBytes)
        do {
            _ = try LinuxLoader.load(kernel: files.kernel, initrd: files.initramfs, cmdline: config.cmdline,
                                     vcpus: config.vcpus, memoryMap: map, into: DiscardingGuestMemory(map: map))
        } catch let e as BootError {
            let key: String
            switch e {
            case .cmdlineTooLong, .cmdlineContainsNUL: key = keys.cmdline
            case .initrdDoesNotFit: key = keys.initramfs
            case .memoryTooSmall, .segmentOutsideRAM: key = keys.memory
            case .invalidVCPUCount, .mpTableDoesNotFit: key = keys.vcpus
            default: key = keys.kernel
            }
            return .failure(ConfigError(issues: [ConfigIssue(keyPath: key, message: "\(e)")]))
        } catch {
            return .failure(ConfigError(issues: [ConfigIssue(keyPath: keys.kernel, message: "\(error)")]))
        }
        var summary = files.kernel.summary
        if config.initramfsPath != nil {
            summary += ", initramfs " + (files.initramfsArchives.isEmpty ? "empty"
                                         : files.initramfsArchives.map(\.description).joined(separator: " then "))
        }
        return .success(summary)
    }
}

/// A kernel file as the loader reads it: the headers where the parser looks,
/// then the payload a chunk at a time straight into guest memory, so the
/// VMM never holds the whole file (HostSys's `ReadOnlyFile`, pread).
final class KernelFile: ImageSource {
    let file: ReadOnlyFile
    init(_ file: ReadOnlyFile) { self.file = file }
    var count: UInt64 { file.size }
    func read(_ offset: UInt64, _ length: Int) -> [UInt8]? {
        guard length >= 0, offset <= file.size, UInt64(length) <= file.size - offset else { return nil }
        return file.read(at: offset, count: length)
    }
}
