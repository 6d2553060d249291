// Command certs writes the PKI of the one-machine cluster of hack/cluster.sh into a directory:
// a CA, the serving certificates of the apiserver and the kubelet, the client certificates of
// everything that talks to the apiserver (and of the apiserver to the kubelet), and the
// service-account signing key. Files that exist are kept, so a cluster keeps its identity
// across `down` and `up`; delete the directory to start over.
//
//	go run ./hack/cluster/certs -dir _output/cluster/pki
//
// All keys are ECDSA P-256 (the service-account tokens are ES256). Certificates are valid for
// ten years: this PKI exists only on a developer's or CI machine, for loopback.
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

const validity = 10 * 365 * 24 * time.Hour

type cert struct {
	name   string   // file name without extension
	cn     string   // subject common name
	orgs   []string // subject organizations (Kubernetes groups)
	server bool     // serving certificate (else client)
	dns    []string
	ips    []net.IP
}

func main() {
	dir := flag.String("dir", "", "the directory to write into (created when missing)")
	node := flag.String("node", "localhost", "the node name (kubelet identity and serving name)")
	serviceIP := flag.String("service-ip", "10.0.0.1", "the ClusterIP of the kubernetes Service (a SAN of the apiserver)")
	flag.Parse()
	if *dir == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: certs -dir DIR [-node NAME] [-service-ip IP]")
		os.Exit(2)
	}
	if err := run(*dir, *node, *serviceIP); err != nil {
		fmt.Fprintf(os.Stderr, "certs: %v\n", err)
		os.Exit(1)
	}
}

func run(dir, node, serviceIP string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	svc := net.ParseIP(serviceIP)
	if svc == nil {
		return fmt.Errorf("-service-ip %q is not an IP address", serviceIP)
	}
	loopback := []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")}
	nodeNames := []string{node}
	if node != "localhost" {
		nodeNames = append(nodeNames, "localhost")
	}
	caCert, caKey, err := loadOrMakeCA(dir)
	if err != nil {
		return err
	}
	certs := []cert{
		{name: "apiserver", cn: "kube-apiserver", server: true,
			dns: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
				"kubernetes.default.svc.cluster.local"},
			ips: append([]net.IP{svc}, loopback...)},
		{name: "kubelet", cn: "system:node:" + node, orgs: []string{"system:nodes"}, server: true,
			dns: nodeNames, ips: loopback},
		// system:masters: the apiserver may do everything on the kubelet (logs, exec, metrics).
		{name: "apiserver-kubelet-client", cn: "kube-apiserver-kubelet-client", orgs: []string{"system:masters"}},
		{name: "kubelet-client", cn: "system:node:" + node, orgs: []string{"system:nodes"}},
		{name: "admin", cn: "slipway-admin", orgs: []string{"system:masters"}},
		{name: "controller-manager", cn: "system:kube-controller-manager"},
		{name: "scheduler", cn: "system:kube-scheduler"},
	}
	for _, c := range certs {
		if exists(filepath.Join(dir, c.name+".crt")) && exists(filepath.Join(dir, c.name+".key")) {
			continue
		}
		if err := makeCert(dir, c, caCert, caKey); err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
	}
	if !exists(filepath.Join(dir, "sa.key")) || !exists(filepath.Join(dir, "sa.pub")) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		if err := writeKey(filepath.Join(dir, "sa.key"), key); err != nil {
			return err
		}
		pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
		if err != nil {
			return err
		}
		if err := writePEM(filepath.Join(dir, "sa.pub"), "PUBLIC KEY", pub, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func loadOrMakeCA(dir string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	crtPath, keyPath := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	if exists(crtPath) && exists(keyPath) {
		crt, err := readCert(crtPath)
		if err != nil {
			return nil, nil, err
		}
		key, err := readKey(keyPath)
		if err != nil {
			return nil, nil, err
		}
		return crt, key, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "slipway-cluster-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	// Every certificate signed by an older CA is stale now.
	matches, _ := filepath.Glob(filepath.Join(dir, "*.crt"))
	for _, m := range matches {
		os.Remove(m)
	}
	if err := writeKey(keyPath, key); err != nil {
		return nil, nil, err
	}
	if err := writePEM(crtPath, "CERTIFICATE", der, 0o644); err != nil {
		return nil, nil, err
	}
	crt, err := x509.ParseCertificate(der)
	return crt, key, err
}

func makeCert(dir string, c cert, ca *x509.Certificate, caKey *ecdsa.PrivateKey) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: c.cn, Organization: c.orgs},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		DNSNames:     c.dns,
		IPAddresses:  c.ips,
	}
	if c.server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return err
	}
	if err := writeKey(filepath.Join(dir, c.name+".key"), key); err != nil {
		return err
	}
	return writePEM(filepath.Join(dir, c.name+".crt"), "CERTIFICATE", der, 0o644)
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err)
	}
	return n
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	return writePEM(path, "EC PRIVATE KEY", der, 0o600)
}

// writePEM writes through a temporary file and a rename, so a file that exists is complete.
func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func readCert(path string) (*x509.Certificate, error) {
	b, err := readPEM(path, "CERTIFICATE")
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(b)
}

func readKey(path string) (*ecdsa.PrivateKey, error) {
	b, err := readPEM(path, "EC PRIVATE KEY")
	if err != nil {
		return nil, err
	}
	return x509.ParseECPrivateKey(b)
}

func readPEM(path, typ string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil || !strings.EqualFold(block.Type, typ) {
		return nil, errors.New(path + ": no " + typ + " PEM block")
	}
	return block.Bytes, nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
