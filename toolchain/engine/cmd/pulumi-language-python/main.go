// Command pulumi-language-python is Iotistic's Python language host for the Pulumi engine.
//
// The upstream host (module github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3)
// is not served by the Go module proxy reachable from our machines, so we build this small host
// on the pinned sdk/v3 module instead. It speaks the same LanguageRuntime gRPC protocol and runs
// programs through the upstream `pulumi-language-python-exec` script, which setup copies next to
// this binary (the same place the upstream host looks for it).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"github.com/pulumi/pulumi/sdk/v3/go/common/util/rpcutil"
	"github.com/pulumi/pulumi/sdk/v3/go/common/version"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"github.com/pulumi/pulumi/sdk/v3/python/toolchain"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"
)

// execScriptName is the upstream Python entry point that configures the SDK and runs the program.
const execScriptName = "pulumi-language-python-exec"

// userActionableExitCode tells us the program already printed an error for the user (upstream contract).
const userActionableExitCode = 32

// listPluginsScript prints the Pulumi resource plugins that installed Python packages declare in
// their pulumi-plugin.json, as a JSON list; this is how the engine learns which plugins to load.
const listPluginsScript = `
import importlib.metadata as md, json
found = []
for dist in md.distributions():
    for f in dist.files or []:
        if f.name == "pulumi-plugin.json":
            data = json.loads(f.read_text())
            if data.get("resource"):
                name = data.get("name") or dist.metadata["Name"].removeprefix("pulumi_").removeprefix("pulumi-")
                found.append({"name": name, "version": data.get("version") or dist.version,
                              "server": data.get("server", "")})
print(json.dumps(found))
`

type host struct {
	pulumirpc.UnimplementedLanguageRuntimeServer
	engineAddress string
	execScript    string
}

// toolchainFor resolves the Python toolchain (the project's virtualenv) from Pulumi.yaml's runtime options.
func toolchainFor(info *pulumirpc.ProgramInfo) (toolchain.Toolchain, error) {
	opts := toolchain.PythonOptions{Toolchain: toolchain.Pip}
	if info != nil {
		opts.Root = info.GetRootDirectory()
		opts.ProgramDir = info.GetProgramDirectory()
		if o := info.GetOptions(); o != nil {
			if v, ok := o.AsMap()["virtualenv"].(string); ok {
				opts.Virtualenv = v
			}
		}
	}
	return toolchain.ResolveToolchain(opts)
}

func (h *host) Handshake(_ context.Context, req *pulumirpc.LanguageHandshakeRequest) (*pulumirpc.LanguageHandshakeResponse, error) {
	h.engineAddress = req.GetEngineAddress()
	return &pulumirpc.LanguageHandshakeResponse{}, nil
}

func (h *host) GetPluginInfo(context.Context, *emptypb.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: version.Version}, nil
}

type pluginSpec struct{ Name, Version, Server string }

func (h *host) GetRequiredPackages(ctx context.Context, req *pulumirpc.GetRequiredPackagesRequest) (*pulumirpc.GetRequiredPackagesResponse, error) {
	plugins, err := cachedVenvAnswer(venvPath(req.GetInfo()), "required-packages", func() ([]pluginSpec, error) {
		tc, err := toolchainFor(req.GetInfo())
		if err != nil {
			return nil, err
		}
		cmd, err := tc.Command(ctx, "-c", listPluginsScript)
		if err != nil {
			return nil, err
		}
		out, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("listing Pulumi plugins of the Python packages: %w", err)
		}
		var plugins []pluginSpec
		if err := json.Unmarshal(out, &plugins); err != nil {
			return nil, fmt.Errorf("parsing the plugin list %q: %w", out, err)
		}
		return plugins, nil
	})
	if err != nil {
		return nil, err
	}
	resp := &pulumirpc.GetRequiredPackagesResponse{}
	for _, p := range plugins {
		v := p.Version
		if !strings.HasPrefix(v, "v") {
			v = "v" + v
		}
		resp.Packages = append(resp.Packages, &pulumirpc.PackageDependency{
			Kind: "resource", Name: p.Name, Version: v, Server: p.Server,
		})
	}
	return resp, nil
}

func (h *host) Run(ctx context.Context, req *pulumirpc.RunRequest) (*pulumirpc.RunResponse, error) {
	tc, err := toolchainFor(req.GetInfo())
	if err != nil {
		return nil, err
	}
	program := req.GetInfo().GetEntryPoint()
	if program == "" {
		program = "."
	}
	args := []string{"-u", h.execScript,
		"--monitor", req.GetMonitorAddress(),
		"--engine", h.engineAddress,
		"--project", req.GetProject(),
		"--stack", req.GetStack(),
		"--pwd", req.GetPwd(),
		"--dry_run", fmt.Sprint(req.GetDryRun()),
		"--parallel", fmt.Sprint(req.GetParallel()),
		"--organization", req.GetOrganization(),
		"--root_directory", req.GetInfo().GetRootDirectory(),
		program,
	}
	args = append(args, req.GetArgs()...)
	cmd, err := tc.Command(ctx, args...)
	if err != nil {
		return nil, err
	}
	// Empty config must be sent as {} and [] (not null): the SDK iterates over them.
	configMap, secretKeyList := req.GetConfig(), req.GetConfigSecretKeys()
	if configMap == nil {
		configMap = map[string]string{}
	}
	if secretKeyList == nil {
		secretKeyList = []string{}
	}
	config, err := json.Marshal(configMap)
	if err != nil {
		return nil, err
	}
	secretKeys, err := json.Marshal(secretKeyList)
	if err != nil {
		return nil, err
	}
	if cmd.Env == nil { // no virtualenv: the toolchain leaves the environment unset
		cmd.Env = os.Environ()
	}
	cmd.Env = append(cmd.Env, "PULUMI_CONFIG="+string(config), "PULUMI_CONFIG_SECRET_KEYS="+string(secretKeys))
	cmd.Dir = req.GetInfo().GetProgramDirectory()
	// The engine reads our stdout/stderr as the program's diagnostics.
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr

	if err := cmd.Run(); err != nil {
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			if exitErr.ExitCode() == userActionableExitCode {
				return &pulumirpc.RunResponse{Bail: true}, nil
			}
			return &pulumirpc.RunResponse{Error: fmt.Sprintf("Program exited with non-zero exit code: %d", exitErr.ExitCode())}, nil
		}
		return &pulumirpc.RunResponse{Error: fmt.Sprintf("Problem executing program (could not run language executor): %v", err)}, nil
	}
	return &pulumirpc.RunResponse{}, nil
}

// RunPlugin runs a plugin written in Python, such as a policy pack (Kind "analyzer"): `python
// <ProgramDirectory> <Args...>` in the plugin's virtualenv (runtime option `virtualenv`, default
// "venv" beside the plugin), in req.Pwd with req.Env added. Its stdout and stderr are streamed to
// the engine (which reads the analyzer's gRPC port from the first stdout line), then its exit code.
func (h *host) RunPlugin(req *pulumirpc.RunPluginRequest, server pulumirpc.LanguageRuntime_RunPluginServer) error {
	info := req.GetInfo()
	if info == nil || info.GetProgramDirectory() == "" {
		return errors.New("RunPlugin needs the plugin's program info (its directory)")
	}
	opts := toolchain.PythonOptions{
		Toolchain:  toolchain.Pip,
		Root:       info.GetRootDirectory(),
		ProgramDir: info.GetProgramDirectory(),
		Virtualenv: "venv", // like upstream: never the ambient Python for a plugin
	}
	if opts.Root == "" {
		opts.Root = opts.ProgramDir
	}
	if o := info.GetOptions(); o != nil {
		if v, ok := o.AsMap()["virtualenv"].(string); ok && v != "" {
			opts.Virtualenv = v
		}
	}
	tc, err := toolchain.ResolveToolchain(opts)
	if err != nil {
		return fmt.Errorf("resolving the Python toolchain of the plugin in %s: %w", opts.ProgramDir, err)
	}
	if err := tc.ValidateVenv(server.Context()); err != nil {
		return fmt.Errorf("the plugin's virtualenv %q is not usable: %w", opts.Virtualenv, err)
	}
	cmd, err := tc.Command(server.Context(), append([]string{"-u", info.GetProgramDirectory()}, req.GetArgs()...)...)
	if err != nil {
		return err
	}
	closer, stdout, stderr, err := rpcutil.MakeRunPluginStreams(server, false)
	if err != nil {
		return err
	}
	defer closer.Close()
	if cmd.Env == nil {
		cmd.Env = os.Environ()
	}
	cmd.Env = append(cmd.Env, req.GetEnv()...)
	cmd.Dir = req.GetPwd()
	// exec copies stdout and stderr in two goroutines; a gRPC stream takes one Send at a time.
	var sending sync.Mutex
	cmd.Stdout, cmd.Stderr = &lockedWriter{&sending, stdout}, &lockedWriter{&sending, stderr}

	code := 0
	if err := cmd.Run(); err != nil {
		var exitErr *exec.ExitError
		if !errors.As(err, &exitErr) {
			return fmt.Errorf("running the plugin in %s: %w", opts.ProgramDir, err)
		}
		code = exitErr.ExitCode()
	}
	// Flush what the plugin printed before the exit code reaches the engine.
	if err := closer.Close(); err != nil {
		return err
	}
	return server.Send(&pulumirpc.RunPluginResponse{Output: &pulumirpc.RunPluginResponse_Exitcode{Exitcode: int32(code)}})
}

// lockedWriter serialises writes that share one gRPC stream.
type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (h *host) InstallDependencies(req *pulumirpc.InstallDependenciesRequest, server pulumirpc.LanguageRuntime_InstallDependenciesServer) error {
	tc, err := toolchainFor(req.GetInfo())
	if err != nil {
		return err
	}
	// The project's own setup creates and fills the virtualenv; here we only check it is usable.
	if err := tc.ValidateVenv(server.Context()); err != nil {
		return fmt.Errorf("the Python virtualenv is not ready (run the project's setup first): %w", err)
	}
	return server.Send(&pulumirpc.InstallDependenciesResponse{Stdout: []byte("virtualenv is ready\n")})
}

type aboutAnswer struct{ Executable, Version string }

func (h *host) About(ctx context.Context, req *pulumirpc.AboutRequest) (*pulumirpc.AboutResponse, error) {
	about, err := cachedVenvAnswer(venvPath(req.GetInfo()), "about", func() (aboutAnswer, error) {
		tc, err := toolchainFor(req.GetInfo())
		if err != nil {
			return aboutAnswer{}, err
		}
		info, err := tc.About(ctx)
		if err != nil {
			return aboutAnswer{}, err
		}
		return aboutAnswer{info.PythonExecutable, info.PythonVersion.String()}, nil
	})
	if err != nil {
		return nil, err
	}
	return &pulumirpc.AboutResponse{Executable: about.Executable, Version: about.Version}, nil
}

type dependency struct{ Name, Version string }

func (h *host) GetProgramDependencies(ctx context.Context, req *pulumirpc.GetProgramDependenciesRequest) (*pulumirpc.GetProgramDependenciesResponse, error) {
	question := fmt.Sprintf("program-dependencies transitive=%v", req.GetTransitiveDependencies())
	deps, err := cachedVenvAnswer(venvPath(req.GetInfo()), question, func() ([]dependency, error) {
		tc, err := toolchainFor(req.GetInfo())
		if err != nil {
			return nil, err
		}
		pkgs, err := tc.ListPackages(ctx, req.GetTransitiveDependencies())
		if err != nil {
			return nil, err
		}
		deps := make([]dependency, 0, len(pkgs))
		for _, p := range pkgs {
			deps = append(deps, dependency{p.Name, p.Version})
		}
		return deps, nil
	})
	if err != nil {
		return nil, err
	}
	resp := &pulumirpc.GetProgramDependenciesResponse{}
	for _, d := range deps {
		resp.Dependencies = append(resp.Dependencies, &pulumirpc.DependencyInfo{Name: d.Name, Version: d.Version})
	}
	return resp, nil
}

func (h *host) RuntimeOptionsPrompts(context.Context, *pulumirpc.RuntimeOptionsRequest) (*pulumirpc.RuntimeOptionsResponse, error) {
	return &pulumirpc.RuntimeOptionsResponse{}, nil
}

func (h *host) Cancel(context.Context, *emptypb.Empty) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, nil
}

func main() {
	// The engine passes its address as the last positional argument (older engines put flags first).
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: pulumi-language-python [flags] ENGINE_ADDRESS")
		os.Exit(1)
	}
	self, err := os.Executable()
	if err == nil {
		self, err = filepath.EvalSymlinks(self)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "fatal: locating the language host executable: %v\n", err)
		os.Exit(1)
	}
	h := &host{engineAddress: os.Args[len(os.Args)-1], execScript: filepath.Join(filepath.Dir(self), execScriptName)}
	if _, err := os.Stat(h.execScript); err != nil {
		fmt.Fprintf(os.Stderr, "fatal: %s must sit next to the language host: %v\n", execScriptName, err)
		os.Exit(1)
	}

	handle, err := rpcutil.ServeWithOptions(rpcutil.ServeOptions{
		Init: func(srv *grpc.Server) error {
			pulumirpc.RegisterLanguageRuntimeServer(srv, h)
			return nil
		},
		Options: rpcutil.OpenTracingServerInterceptorOptions(nil),
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "fatal: %v\n", err)
		os.Exit(1)
	}
	// The engine reads the port we listen on from our first line of output.
	fmt.Printf("%d\n", handle.Port)
	if err := <-handle.Done; err != nil {
		fmt.Fprintf(os.Stderr, "fatal: %v\n", err)
		os.Exit(1)
	}
}
