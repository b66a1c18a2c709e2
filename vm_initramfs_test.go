package main

// vm_initramfs_test.go: the guest's root filesystem for the VM suites (vm_test.go): a newc cpio
// archive of busybox, rund, this package's test binary, the init script and the kernel modules the
// guest needs, each module after those it depends on.

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// writeInitramfs writes the guest's root filesystem as a newc cpio archive (the kernel's initramfs
// format), uncompressed.
func writeInitramfs(path string, assets map[string]string, rund, rundTest string, arch vmArch) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	w := &cpioWriter{w: bufio.NewWriterSize(f, 1<<20)}
	for _, d := range []string{"bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp", "run",
		"etc", "etc/init.d", "lib", "lib/modules", "mnt", "root", "usr/local", "usr/local/bin"} {
		w.add(d, 0o040755, nil, 0, 0)
	}
	w.add("dev/console", 0o020600, nil, 5, 1) // the kernel opens it for /init's stdio
	w.add("dev/null", 0o020666, nil, 1, 3)
	w.add("init", 0o100755, []byte(fmt.Sprintf(vmInit, arch.scale(vmGuestTimeout))), 0, 0)
	w.add("bin/sh", 0o120777, []byte("busybox"), 0, 0) // for /init's #!, before it installs the rest
	w.add("etc/hosts", 0o100644, []byte("127.0.0.1 localhost\n::1 localhost\n"), 0, 0)
	// The init script and rund where it looks for it (e2e_initscript_test.go).
	w.add("usr/local/bin/rund", 0o120777, []byte("/bin/rund"), 0, 0)
	script, err := os.ReadFile("contrib/rund.init")
	if err != nil {
		return err
	}
	w.add("etc/init.d/rund", 0o100755, script, 0, 0)
	for _, file := range []struct{ src, dst string }{
		{assets["busybox"], "bin/busybox"}, {rund, "bin/rund"}, {rundTest, "bin/rund.test"},
	} {
		data, err := os.ReadFile(file.src)
		if err != nil {
			return err
		}
		w.add(file.dst, 0o100755, data, 0, 0)
	}
	return w.finish(assets["modules"])
}

// finish adds the virtio modules from the kernel's modules directory with the order to load them in
// (lib/modules/order, which /init reads), then the trailer, and flushes.
func (w *cpioWriter) finish(modules string) error {
	mods, err := moduleLoadOrder(modules, vmModules)
	if err != nil {
		return err
	}
	var order []string
	for _, m := range mods {
		data, err := readModule(m.path)
		if err != nil {
			return err
		}
		w.add("lib/modules/"+m.name+".ko", 0o100644, data, 0, 0)
		order = append(order, m.name)
	}
	w.add("lib/modules/order", 0o100644, []byte(strings.Join(order, "\n")+"\n"), 0, 0)
	w.add("TRAILER!!!", 0, nil, 0, 0)
	if w.err == nil {
		w.err = w.w.Flush()
	}
	return w.err
}

// cpioWriter writes the "newc" format: a 110-byte ASCII header, the NUL-terminated name, the data,
// each padded to 4 bytes.
type cpioWriter struct {
	w   *bufio.Writer
	ino int
	err error
}

func (c *cpioWriter) add(name string, mode uint32, data []byte, rdevMajor, rdevMinor int) {
	if c.err != nil {
		return
	}
	c.ino++
	nlink := 1
	if mode&0o170000 == 0o040000 {
		nlink = 2
	}
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdevMajor, rdevMinor, len(name)+1, 0)
	pad := func(n int) []byte { return make([]byte, (4-n%4)%4) }
	for _, b := range [][]byte{[]byte(hdr), []byte(name), {0}, pad(len(hdr) + len(name) + 1), data, pad(len(data))} {
		if _, err := c.w.Write(b); err != nil {
			c.err = err
			return
		}
	}
}

type kmod struct{ name, path string }

// moduleLoadOrder returns want and the modules they depend on, each after its dependencies, leaving
// out those built into the kernel (modules.builtin: trixie's 6.12 cloud kernel builds virtio_pci in,
// bookworm's 6.1 has it as a module). The kernel package ships no modules.dep (depmod makes it at
// install), so dependencies come from where depmod takes them: the "depends=" entry of each module's
// .modinfo section.
func moduleLoadOrder(dir string, want []string) ([]kmod, error) {
	paths := map[string]string{} // module name -> file
	state := map[string]int{}    // 1: visiting, 2: done (or built in)
	builtin, err := os.ReadFile(filepath.Join(dir, "modules.builtin"))
	if err != nil {
		return nil, err
	}
	for _, p := range strings.Fields(string(builtin)) {
		state[strings.ReplaceAll(strings.TrimSuffix(filepath.Base(p), ".ko"), "-", "_")] = 2
	}
	err = filepath.WalkDir(filepath.Join(dir, "kernel"), func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		base := filepath.Base(p)
		if i := strings.Index(base, ".ko"); i > 0 {
			paths[strings.ReplaceAll(base[:i], "-", "_")] = p
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var order []kmod
	var visit func(name string) error
	visit = func(name string) error {
		switch state[name] {
		case 1:
			return fmt.Errorf("module dependency cycle at %s", name)
		case 2:
			return nil
		}
		state[name] = 1
		p, ok := paths[name]
		if !ok {
			return fmt.Errorf("module %s is neither in %s nor in its modules.builtin", name, dir)
		}
		data, err := readModule(p)
		if err != nil {
			return err
		}
		deps, err := moduleDepends(data)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		for _, d := range deps {
			if err := visit(d); err != nil {
				return err
			}
		}
		state[name] = 2
		order = append(order, kmod{name, p})
		return nil
	}
	for _, w := range want {
		if err := visit(w); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// moduleDepends reads "depends=a,b" from a module's .modinfo section (NUL-separated key=value).
func moduleDepends(ko []byte) ([]string, error) {
	f, err := elf.NewFile(bytes.NewReader(ko))
	if err != nil {
		return nil, err
	}
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, errors.New("no .modinfo section")
	}
	info, err := sec.Data()
	if err != nil {
		return nil, err
	}
	for _, kv := range bytes.Split(info, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok {
			if len(v) == 0 {
				return nil, nil
			}
			return strings.Split(string(v), ","), nil
		}
	}
	return nil, nil
}

// readModule returns a module uncompressed. Debian's 6.1 cloud kernel ships plain .ko files
// (CONFIG_MODULE_COMPRESS_NONE), later ones may compress them: gzip is undone here, xz and zstd by
// their commands, as busybox insmod may not know them.
func readModule(path string) ([]byte, error) {
	switch filepath.Ext(path) {
	case ".ko":
		return os.ReadFile(path)
	case ".gz":
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		z, err := gzip.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return io.ReadAll(z)
	case ".xz", ".zst":
		tool := map[string]string{".xz": "xz", ".zst": "zstd"}[filepath.Ext(path)]
		out, err := exec.Command(tool, "-dc", path).Output()
		if err != nil {
			return nil, fmt.Errorf("decompress %s with %s (install it): %w", path, tool, err)
		}
		return out, nil
	}
	return nil, fmt.Errorf("%s: unknown module file type", path)
}
