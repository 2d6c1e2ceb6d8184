// k8s.io/kubernetes requires k8s.io/sample-apiserver v0.0.0 (an example server none of our
// binaries import), and the module proxy does not serve it at our Kubernetes patch release.
// This empty module only satisfies the requirement so MVS does not pull in another release.
module k8s.io/sample-apiserver

go 1.26
