import Foundation
import XCTest

/// One Swift file under Sources/, with the target it belongs to.
struct SourceFile {
    let module: String
    let path: String
    let text: String
}

/// The layer rules of Package.swift that the compiler does not enforce
/// (a module can import whatever its dependencies import), and the one
/// concurrency vocabulary (Synchronization's `Mutex` and `Atomic`; each
/// `@unchecked Sendable` says why): read from the `import` lines, the code
/// and the comments of every file under Sources/.
enum Layering {
    /// The C library, under its names on the platforms Swift runs on.
    static let libcModules: Set<String> = ["Glibc", "SwiftGlibc", "Musl", "Darwin", "Bionic", "WASILibc", "ucrt"]
    /// Only the host-syscall layer (and the C shim under it) calls libc.
    static let libcImporters: Set<String> = ["CShim", "HostSys"]
    /// CShim is the uAPI: HostSys and KVM use it, and VFIO for the
    /// iommufd/VFIO uAPI (but never KVM's part, see `kvmName`).
    static let cshimImporters: Set<String> = ["CShim", "HostSys", "KVM", "VFIO"]
    /// KVM's part of CShim (cshim.h: ioctl numbers, flags, capabilities, exit
    /// reasons, kvm_run and APIC offsets) and the linux/kvm.h structs. Only
    /// Sources/KVM may name them: the rest sees KVM through its Swift API.
    static let kvmOwners: Set<String> = ["CShim", "KVM"]
    static let kvmName = regex(#"\b(SHIM_KVM_\w+|SHIM_RUN_\w+|SHIM_APIC_\w+|kvm_[a-z0-9_]+)\b"#)
    /// liburing (in CShim): only HostSys drives io_uring.
    static let uringOwners: Set<String> = ["CShim", "HostSys"]
    static let uringName = regex(#"\b(io_uring\w*|SHIM_IOSQE_\w+)\b"#)
    /// Imports that Package.swift no longer allows, which a transitive
    /// dependency would still let compile.
    static let forbiddenImports: [String: Set<String>] = [
        "VFIO": ["KVM"], // VFIO gets kvm-vfio as a protocol (KVMVFIODevice)
        "Virtio": ["HostSys"], // the VMM glues BlockFile and TapDevice to the backends
    ]
    /// The full Foundation (and its internationalization half) links ICU's
    /// data, 34 MiB, into the static binary: the VMM uses FoundationEssentials.
    static let fullFoundation: Set<String> = ["Foundation", "FoundationInternationalization"]
    /// libc calls that Foundation would re-export to any module: a module
    /// other than HostSys that makes one has found a way around the rule.
    /// A declaration of a method with such a name (`func free(domain:)`) is no call.
    static let libcCall = regex(
        #"(?<![\w.])(?<!func )(free|malloc|calloc|realloc|strerror|clock_gettime|gettimeofday|access|getpid|usleep|nanosleep|sysconf|isatty|dup|dup2|sigaction|pthread_\w+)\s*\("#
            + #"|(?<![\w.])errno\b(?!\s*:)(?!\s+\w+\s*:)"#)

    /// Foundation's locks: every layer locks with `Mutex` and `Atomic`, so
    /// the compiler checks what they guard.
    static let foundationLock = regex(#"\b(NSLock|NSRecursiveLock|NSCondition|NSConditionLock|NSDistributedLock)\b"#)
    static let uncheckedSendable = regex(#"@unchecked\s+Sendable"#)
    /// What the comment above an `@unchecked Sendable` starts with.
    static let uncheckedReason = regex(#"^\s*// @unchecked Sendable: \S"#)

    static let importLine = regex(
        #"^\s*(?:@\w+(?:\([^)]*\))?\s+)*(?:(?:public|package|internal|fileprivate|private)\s+)?import\s+(?:(?:typealias|struct|class|enum|protocol|let|var|func)\s+)?([A-Za-z_]\w*)"#)

    static func regex(_ pattern: String) -> NSRegularExpression {
        do { return try NSRegularExpression(pattern: pattern, options: [.anchorsMatchLines]) } catch {
            fatalError("bad pattern \(pattern): \(error)")
        }
    }

    static func matches(_ re: NSRegularExpression, _ s: String) -> [String] {
        re.matches(in: s, range: NSRange(s.startIndex..., in: s)).compactMap { m in
            let r = m.numberOfRanges > 1 && m.range(at: 1).location != NSNotFound ? m.range(at: 1) : m.range
            return Range(r, in: s).map { String(s[$0]) }
        }
    }

    /// The modules `text` imports, with line numbers.
    static func imports(_ text: String) -> [(line: Int, module: String)] {
        lines(code(text)).flatMap { n, l in matches(importLine, l).map { (line: n, module: $0) } }
    }

    /// `text` with comments and string literals blanked, line numbers kept.
    static func code(_ text: String) -> String {
        var s = text
        for block in [#"/\*[\s\S]*?\*/"#, #"\"\"\"[\s\S]*?\"\"\""#] {
            let re = regex(block)
            for m in re.matches(in: s, range: NSRange(s.startIndex..., in: s)).reversed() {
                guard let r = Range(m.range, in: s) else { continue }
                s.replaceSubrange(r, with: String(repeating: "\n", count: s[r].filter { $0 == "\n" }.count))
            }
        }
        let string = regex(#""(?:[^"\\\n]|\\.)*""#), comment = regex(#"//.*$"#)
        for re in [string, comment] {
            s = re.stringByReplacingMatches(in: s, range: NSRange(s.startIndex..., in: s), withTemplate: "")
        }
        return s
    }

    static func lines(_ s: String) -> [(Int, String)] {
        s.split(separator: "\n", omittingEmptySubsequences: false).enumerated().map { ($0.offset + 1, String($0.element)) }
    }

    /// Whether the comment lines right above line `n` (1-based) of `text`
    /// hold an `// @unchecked Sendable: why` line.
    static func saysWhyUnchecked(_ text: String, line n: Int) -> Bool {
        let raw = lines(text).map(\.1)
        var i = n - 2
        while i >= 0, raw[i].trimmingCharacters(in: .whitespaces).hasPrefix("//") {
            if !matches(uncheckedReason, raw[i]).isEmpty { return true }
            i -= 1
        }
        return false
    }

    /// Every broken rule, one line each ("path:line: what").
    static func violations(_ files: [SourceFile]) -> [String] {
        var out: [String] = []
        for f in files {
            for (line, module) in imports(f.text) {
                let at = "\(f.path):\(line): \(f.module) imports \(module)"
                if libcModules.contains(module), !libcImporters.contains(f.module) {
                    out.append("\(at): only HostSys calls libc (add a HostSys API)")
                }
                if module == "CShim", !cshimImporters.contains(f.module) {
                    out.append("\(at): only HostSys, KVM and VFIO see the uAPI")
                }
                if fullFoundation.contains(module) {
                    out.append("\(at): use FoundationEssentials (the full Foundation links ICU into the binary)")
                }
                if forbiddenImports[f.module]?.contains(module) == true {
                    out.append("\(at): not a dependency of \(f.module) in Package.swift")
                }
            }
            for (line, text) in lines(code(f.text)) {
                for lock in matches(foundationLock, text) {
                    out.append("\(f.path):\(line): \(f.module) uses \(lock): lock with Synchronization's Mutex or Atomic")
                }
                if !matches(uncheckedSendable, text).isEmpty, !saysWhyUnchecked(f.text, line: line) {
                    out.append("\(f.path):\(line): @unchecked Sendable without a \"// @unchecked Sendable: why\" comment above it")
                }
                if !uringOwners.contains(f.module) {
                    for name in matches(uringName, text) {
                        out.append("\(f.path):\(line): \(f.module) uses liburing's \(name): only HostSys drives io_uring")
                    }
                }
                if !kvmOwners.contains(f.module) {
                    for name in matches(kvmName, text) {
                        out.append("\(f.path):\(line): \(f.module) uses KVM's \(name): only Sources/KVM sees KVM's uAPI")
                    }
                }
                if !libcImporters.contains(f.module) {
                    for call in matches(libcCall, text) {
                        out.append("\(f.path):\(line): \(f.module) calls libc (\(call)): only HostSys calls libc")
                    }
                }
            }
        }
        return out
    }

    /// The checkout this test file is in.
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// Every .swift file under root/Sources, module = its first folder.
    static func sources(root: URL = root) throws -> [SourceFile] {
        let base = root.appendingPathComponent("Sources").standardizedFileURL.path
        guard let walk = FileManager.default.enumerator(atPath: base) else { return [] }
        var files: [SourceFile] = []
        while let rel = walk.nextObject() as? String {
            guard rel.hasSuffix(".swift"), let module = rel.split(separator: "/").first else { continue }
            let text = try String(contentsOfFile: base + "/" + rel, encoding: .utf8)
            files.append(SourceFile(module: String(module), path: "Sources/" + rel, text: text))
        }
        return files.sorted { $0.path < $1.path }
    }
}

final class LayeringTests: XCTestCase {
    func testSourcesKeepTheLayers() throws {
        XCTAssertTrue(FileManager.default.fileExists(atPath: Layering.root.appendingPathComponent("Package.swift").path),
                      "the checkout root is three folders above \(#filePath)")
        let files = try Layering.sources()
        let modules = Set(files.map(\.module))
        for m in ["HostSys", "KVM", "VFIO", "Virtio", "VMM"] {
            XCTAssertTrue(modules.contains(m), "no Swift files found for \(m): the walk of Sources/ is broken")
        }
        let broken = Layering.violations(files)
        XCTAssertEqual(broken, [], "\n" + broken.joined(separator: "\n"))
    }

    /// The rules catch what they are for, and pass what is allowed: a
    /// check that cannot fail would prove nothing.
    func testRulesCatchViolations() {
        func check(_ module: String, _ text: String) -> [String] {
            Layering.violations([SourceFile(module: module, path: "Sources/\(module)/X.swift", text: text)])
        }
        XCTAssertEqual(check("KVM", "import CShim\nimport Glibc\n").count, 1)
        XCTAssertEqual(check("VFIO", "@preconcurrency import Glibc").count, 1)
        XCTAssertEqual(check("VMM", "import struct Glibc.timespec").count, 1)
        XCTAssertEqual(check("Devices", "  public import Musl").count, 1)
        XCTAssertEqual(check("VMM", "import CShim").count, 1)
        XCTAssertEqual(check("VMM", "import Foundation\nimport FoundationEssentials").count, 1)
        XCTAssertEqual(check("VMConfig", "import struct Foundation.Date").count, 1)
        XCTAssertEqual(check("Virtio", "import GuestMemory\nimport HostSys").count, 1)
        XCTAssertEqual(check("VFIO", "import KVM").count, 1)
        XCTAssertEqual(check("VFIO", "import CShim\nlet t = SHIM_KVM_DEV_TYPE_VFIO").count, 1)
        XCTAssertEqual(check("VMM", "let o = SHIM_RUN_MMIO_DATA + 1").count, 1)
        XCTAssertEqual(check("VMM", "var r = kvm_regs()").count, 1)
        XCTAssertEqual(check("VFIO", "import CShim\nio_uring_submit(ring)").count, 1)
        XCTAssertEqual(check("HostSys", "import CShim\nlet r = io_uring_submit(ring)").count, 0)
        XCTAssertEqual(check("VMM", "// uses BlockFileRing (io_uring)\nlet ring = try BlockFileRing(file: f, entries: 8)").count, 0)
        XCTAssertEqual(check("VFIO", "defer { free(p) }").count, 1)
        XCTAssertEqual(check("VFIO", "let m = String(cString: strerror(e))").count, 1)
        XCTAssertEqual(check("VMConfig", "if access(path, W_OK) == 0 { return nil }\nreturn f(errno: errno)").count, 2)
        XCTAssertEqual(check("KVM", "import FoundationEssentials\nimport CShim\n\nlet x = 1\nimport Glibc"),
                       ["Sources/KVM/X.swift:5: KVM imports Glibc: only HostSys calls libc (add a HostSys API)"])
        XCTAssertEqual(check("VMM", "final class C {\n    private let lock = NSLock()\n}"),
                       ["Sources/VMM/X.swift:2: VMM uses NSLock: lock with Synchronization's Mutex or Atomic"])
        XCTAssertEqual(check("HostSys", "let c = NSCondition()").count, 1)
        XCTAssertEqual(check("Virtio", "/// A thing.\nfinal class C: @unchecked Sendable {}"),
                       ["Sources/Virtio/X.swift:2: @unchecked Sendable without a \"// @unchecked Sendable: why\" comment above it"])
        XCTAssertEqual(check("PCI", "// @unchecked Sendable: it is safe.\n\nfinal class C: @unchecked Sendable {}").count, 1,
                       "the reason is right above the declaration")

        XCTAssertEqual(check("HostSys", "import CShim\nimport Glibc\nlet e = errno\nfree(p)"), [])
        XCTAssertEqual(check("KVM", "import CShim\nimport HostSys\nlet r = kvm_regs()\nlet n = SHIM_KVM_RUN"), [])
        XCTAssertEqual(check("VFIO", "import CShim\nlet r = SHIM_VFIO_DEVICE_RESET"), [])
        XCTAssertEqual(check("VMM", """
            import KVM // not CShim
            /// Stops on KVM_EXIT_SHUTDOWN (kvm_run.exit_reason, SHIM_KVM_EXIT_SHUTDOWN).
            let s = "guest triple fault (KVM_EXIT_SHUTDOWN, kvm_run)"
            /* import Glibc */
            let e = SysError(errno: 5, operation: "x")
            func f(errno e: Int32) { try performer.free(x) }
            public func free(domain: UInt32) throws { try domains.free(domain: 1) }
            func access(iova: UInt64) -> Bool { true }
            // NSLock is gone; "NSCondition" neither.
            """), [])
        XCTAssertEqual(check("PCI", """
            /// Docs.
            // @unchecked Sendable: an open class cannot be checked; its state
            // is a Mutex.
            open class C: @unchecked Sendable {}
            """), [])
    }
}
