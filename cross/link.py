#!/usr/bin/env python3
"""Linker wrapper: lay out the spotter binary's code with the functions that run first.

Why (issue 21, peak RSS): the kernel maps the whole 64 KiB around a code fault when those pages
are cached, so functions that run, scattered among ones that never do, keep most of `.text`
resident (9.6 of 12.3 MiB on the x86 release build). Placed together, they need a few MiB.

How: cargo calls this as the linker, through cross/ld/<driver> (see .cargo/config.toml and
cross/config.toml), with the real compiler driver as the first argument. For the `spotter`
binary (output `.../deps/spotter-<hash>`, not linking libtest) it maps the names in
cross/hot-functions.txt (demangled, without hashes; made by benches/py/code_pages.py) to the
symbols of this link's inputs, writes them in that order next to the output (`<output>.order`),
and links with lld's `--symbol-ordering-file`. x86_64 links with the toolchain's rust-lld
already; for other targets the driver is given `-fuse-ld=lld` and the toolchain's gcc-ld
directory, so the same rust-lld links them (GNU ld has no ordering option). Every other link
(build scripts, test binaries) goes to the driver unchanged.

The order only moves code: a list that no longer matches costs RSS, not correctness. If the
mapping fails the link goes on without it and says why on stderr; `link.py --check BINARY`
(run by tests/daemon on the built binary) fails when the listed functions are not first.
"""

import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
LIST = os.path.join(HERE, "hot-functions.txt")
ORDERED = re.compile(r"/deps/spotter-[0-9a-f]+$")


def clean(demangled):
    """A demangled name without what changes between builds, targets and toolchains: the
    legacy `::h<16 hex>` suffix, v0 crate disambiguators `[<16 hex>]`, and LLVM's local-symbol
    suffixes (`.llvm.<n>`, `.cold`)."""
    name = re.sub(r"\[[0-9a-f]{16}\]", "", demangled)
    name = re.sub(r"::h[0-9a-f]{16}$", "", name)
    return re.sub(r"\.(llvm\.\d+|cold(\.\d+)?)$", "", name)


def demangle(names):
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True, check=True)
    lines = out.stdout.splitlines()
    if len(lines) != len(names):
        raise RuntimeError("c++filt returned a different number of names")
    return lines


def inputs(args):
    """The object files and archives of the link: file arguments, and `-l` names found as
    static libraries in the `-L` directories."""
    files, dirs, libs = [], [], []
    it = iter(range(len(args)))
    for i in it:
        a = args[i]
        if a == "-L" and i + 1 < len(args):
            dirs.append(args[i + 1])
            next(it, None)
        elif a.startswith("-L"):
            dirs.append(a[2:])
        elif a == "-l" and i + 1 < len(args):
            libs.append(args[i + 1])
            next(it, None)
        elif a.startswith("-l"):
            libs.append(a[2:])
        elif a.endswith((".o", ".a", ".rlib")) and os.path.isfile(a):
            files.append(a)
    for lib in libs:
        name = lib.split(":", 1)[-1]  # -l static:name, -l:libname.a
        cands = [name] if name.endswith(".a") else [f"lib{name}.a"]
        for d in dirs:
            hit = next((os.path.join(d, c) for c in cands if os.path.isfile(os.path.join(d, c))), None)
            if hit:
                files.append(hit)
                break
    return files


def code_symbols(nm, files):
    """Defined code symbols (mangled) of FILES."""
    out = subprocess.run([nm, "-P", "--defined-only", *files], capture_output=True, text=True)
    syms = set()
    for line in out.stdout.splitlines():
        f = line.split()
        if len(f) >= 2 and f[1] in ("T", "t", "W", "w"):
            syms.add(f[0])
    if not syms:
        raise RuntimeError(f"{nm} found no code symbols in {len(files)} input(s): {out.stderr.strip()[:300]}")
    return sorted(syms)


def write_order(driver, args, out):
    with open(LIST, encoding="utf-8") as f:
        wanted = [line.rstrip("\n") for line in f if line.strip() and not line.startswith("#")]
    nm = driver[: -len("gcc")] + "nm" if driver.endswith("-gcc") else "nm"
    syms = code_symbols(nm, inputs(args))
    by_name = {}
    for mangled, demangled in zip(syms, demangle(syms)):
        by_name.setdefault(clean(demangled), []).append(mangled)
    order, found = [], 0
    for name in wanted:
        hits = by_name.get(name)
        if hits:
            found += 1
            order.extend(hits)
    path = out + ".order"
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(order) + "\n")
    return path, found, len(wanted), len(order)


def gcc_ld():
    """The toolchain's gcc-ld directory (its ld.lld runs rust-lld)."""
    sysroot = subprocess.run(["rustc", "--print", "sysroot"], capture_output=True, text=True, check=True).stdout
    host = re.search(r"^host: (\S+)$", subprocess.run(["rustc", "-vV"], capture_output=True, text=True,
                                                      check=True).stdout, re.M).group(1)
    path = os.path.join(sysroot.strip(), "lib", "rustlib", host, "bin", "gcc-ld")
    if not os.path.isfile(os.path.join(path, "ld.lld")):
        raise RuntimeError(f"no ld.lld in {path}")
    return path


def check(binary):
    """Whether BINARY has the listed functions first in its code: at least half of the list is
    in it, and other functions take at most 10 % of the bytes up to where 95 % of the listed
    functions' bytes lie (a few listed symbols sit elsewhere whatever the order, such as libc's
    in `.init`). Prints the figures; returns the exit status."""
    with open(LIST, encoding="utf-8") as f:
        wanted = {line.rstrip("\n") for line in f if line.strip() and not line.startswith("#")}
    out = subprocess.run(["nm", "-S", "--defined-only", binary], capture_output=True, text=True, check=True)
    rows = [f for f in (line.split() for line in out.stdout.splitlines())
            if len(f) >= 4 and f[2] in ("T", "t", "W", "w") and int(f[1], 16) > 0]
    code = [(int(f[0], 16), int(f[1], 16), clean(n)) for f, n in zip(rows, demangle([f[3] for f in rows]))]
    listed = sorted(c for c in code if c[2] in wanted)
    if not listed:
        print(f"link.py: none of the {len(wanted)} listed functions is in {binary}", file=sys.stderr)
        return 1
    found = len({c[2] for c in listed})
    total = sum(n for _, n, _ in listed)
    seen, end = 0, 0
    for a, n, _ in listed:
        seen += n
        if seen >= 0.95 * total:
            end = a + n
            break
    stray = sum(n for a, n, name in code if a < end and name not in wanted)
    print(f"link.py: {found} of {len(wanted)} listed functions in {binary}: {total / 2**20:.2f} MiB; "
          f"up to where 95 % of it lies, {stray / 2**10:.0f} KiB of other code")
    ok = found * 2 >= len(wanted) and stray * 10 <= seen
    return 0 if ok else 1


def main():
    if sys.argv[1:2] == ["--check"] and len(sys.argv) == 3:
        sys.exit(check(sys.argv[2]))
    driver, args = sys.argv[1], sys.argv[2:]
    out = next((args[i + 1] for i, a in enumerate(args[:-1]) if a == "-o"), "")
    extra = []
    # A response file (@file, used for very long command lines) is not read here.
    # The library's test binary has the same output name: it links libtest, and needs no order.
    test = any(re.search(r"/libtest-[0-9a-f]+\.rlib$", a) for a in args)
    if ORDERED.search(out) and not test and os.path.isfile(LIST) and not any(a.startswith("@") for a in args):
        try:
            path, found, wanted, syms = write_order(driver, args, out)
            extra = [f"-Wl,--symbol-ordering-file={path}", "-Wl,--no-warn-symbol-ordering"]
            if "-fuse-ld=lld" not in args:
                extra += ["-fuse-ld=lld", "-B" + gcc_ld()]
            if found * 2 < wanted:
                print(f"link.py: only {found} of the {wanted} functions in {LIST} are in this link: "
                      "regenerate the list (benches/py/code_pages.py)", file=sys.stderr)
        except (OSError, RuntimeError, subprocess.CalledProcessError) as e:
            print(f"link.py: linking {out} without a function order: {e}", file=sys.stderr)
            extra = []
    os.execvp(driver, [driver, *args, *extra])


if __name__ == "__main__":
    main()
