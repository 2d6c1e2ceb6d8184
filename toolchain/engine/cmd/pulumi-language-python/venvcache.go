package main

// Answers about the virtualenv (which plugins its packages declare, which packages it holds, which
// Python it runs) cost a Python start and a scan of every installed distribution: about 0.7 s of
// CPU for each preview or update, paid again by every customer stack. They only change when a
// package is installed or removed, which changes the site-packages folder's modification time,
// so they are kept in PULUMI_HOME under that time and recomputed when it moves.

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
)

type venvCacheEntry struct {
	Key   string          `json:"key"`
	Value json.RawMessage `json:"value"`
}

// venvKey says which state of the virtualenv an answer belongs to: the modification times of its
// site-packages folders ("" when there is no virtualenv to watch: never cached).
func venvKey(venv string) string {
	if venv == "" {
		return ""
	}
	dirs, _ := filepath.Glob(filepath.Join(venv, "lib", "python*", "site-packages"))
	if len(dirs) == 0 {
		return ""
	}
	var parts []string
	for _, d := range dirs {
		st, err := os.Stat(d)
		if err != nil {
			return ""
		}
		parts = append(parts, fmt.Sprintf("%s@%d", d, st.ModTime().UnixNano()))
	}
	return strings.Join(parts, ";")
}

func venvCachePath(venv, question string) string {
	home := os.Getenv("PULUMI_HOME")
	if home == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(venv + "\x00" + question))
	return filepath.Join(home, "iotistic-language-host", hex.EncodeToString(sum[:12])+".json")
}

// cachedVenvAnswer returns the stored answer to `question` for this state of `venv`, or computes
// it with `compute` and stores it (written atomically: deploys run side by side).
func cachedVenvAnswer[T any](venv, question string, compute func() (T, error)) (T, error) {
	key, path := venvKey(venv), venvCachePath(venv, question)
	if key != "" && path != "" {
		if raw, err := os.ReadFile(path); err == nil {
			var entry venvCacheEntry
			var value T
			if json.Unmarshal(raw, &entry) == nil && entry.Key == key && json.Unmarshal(entry.Value, &value) == nil {
				return value, nil
			}
		}
	}
	value, err := compute()
	if err != nil || key == "" || path == "" {
		return value, err
	}
	if encoded, err := json.Marshal(value); err == nil {
		if raw, err := json.Marshal(venvCacheEntry{Key: key, Value: encoded}); err == nil {
			_ = os.MkdirAll(filepath.Dir(path), 0o755)
			if tmp, err := os.CreateTemp(filepath.Dir(path), ".answer-*"); err == nil {
				_, werr := tmp.Write(raw)
				cerr := tmp.Close()
				if werr == nil && cerr == nil {
					_ = os.Rename(tmp.Name(), path)
				} else {
					_ = os.Remove(tmp.Name())
				}
			}
		}
	}
	return value, nil
}

// venvPath is the virtualenv named by Pulumi.yaml's runtime option (relative to the project root),
// or "" when there is none.
func venvPath(info *pulumirpc.ProgramInfo) string {
	if info == nil || info.GetOptions() == nil {
		return ""
	}
	v, _ := info.GetOptions().AsMap()["virtualenv"].(string)
	if v != "" && !filepath.IsAbs(v) {
		v = filepath.Join(info.GetRootDirectory(), v)
	}
	return v
}
