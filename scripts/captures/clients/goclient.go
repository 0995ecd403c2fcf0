// Go crypto/tls client for scripts/captures/generalise.py.
// usage: goclient HOST CAFILE TLS(1.2|1.3|any) ALPN(comma list) PIN(base64 SHA-256 of the leaf SPKI, or "-") [PROXYHOST:PORT]
// With a PIN, tls.Config.VerifyPeerCertificate rejects any leaf whose key differs, after the
// chain checked out against CAFILE: the way Go apps pin behind a trusted proxy CA.
// PIN_CHECK_MS in the environment makes the pin check take that long (an app on a slow device,
// or one that reads its pins from a keystore), so its abort leaves the client that much later.
package main

import (
	"bufio"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	host, cafile, ver, alpn, pin := os.Args[1], os.Args[2], os.Args[3], os.Args[4], os.Args[5]
	pem, err := os.ReadFile(cafile)
	if err != nil {
		panic(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	cfg := &tls.Config{ServerName: host, RootCAs: pool, NextProtos: strings.Split(alpn, ",")}
	switch ver {
	case "1.2":
		cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	case "1.3":
		cfg.MinVersion = tls.VersionTLS13
	}
	checkTime := time.Duration(0)
	if ms, err := strconv.Atoi(os.Getenv("PIN_CHECK_MS")); err == nil {
		checkTime = time.Duration(ms) * time.Millisecond
	}
	if pin != "-" {
		cfg.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
			time.Sleep(checkTime)
			leaf, err := x509.ParseCertificate(raw[0])
			if err != nil {
				return err
			}
			sum := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
			if base64.StdEncoding.EncodeToString(sum[:]) != pin {
				return errors.New("public key pin mismatch")
			}
			return nil
		}
	}
	var raw net.Conn
	if len(os.Args) > 6 {
		raw, err = net.DialTimeout("tcp", os.Args[6], 8*time.Second)
		if err != nil {
			fmt.Println("proxy error:", err)
			os.Exit(2)
		}
		fmt.Fprintf(raw, "CONNECT %s:443 HTTP/1.1\r\nHost: %s:443\r\n\r\n", host, host)
		resp, err := http.ReadResponse(bufio.NewReader(raw), &http.Request{Method: "CONNECT"})
		if err != nil || resp.StatusCode != 200 {
			fmt.Println("proxy refused:", err)
			os.Exit(2)
		}
	} else if raw, err = net.DialTimeout("tcp", net.JoinHostPort(host, "443"), 8*time.Second); err != nil {
		fmt.Println("connect error:", err)
		os.Exit(2)
	}
	raw.SetDeadline(time.Now().Add(8 * time.Second))
	c := tls.Client(raw, cfg)
	if err := c.Handshake(); err != nil {
		fmt.Println("handshake failed:", err)
		c.Close()
		os.Exit(1)
	}
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", host)
	line, _ := bufio.NewReader(c).ReadString('\n')
	fmt.Println("response:", line)
	c.Close()
}
