// Small TLS client used by scripts/make-captures (Go crypto/tls).
// usage: tlsclient HOST PORT CAFILE TLS(1.2|1.3|any) [PROXYHOST:PORT]
package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"
)

func main() {
	host, port, cafile, ver := os.Args[1], os.Args[2], os.Args[3], os.Args[4]
	pem, err := os.ReadFile(cafile)
	if err != nil {
		panic(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	cfg := &tls.Config{ServerName: host, RootCAs: pool, NextProtos: []string{"http/1.1"}}
	switch ver {
	case "1.2":
		cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	case "1.3":
		cfg.MinVersion = tls.VersionTLS13
	}
	var raw net.Conn
	if len(os.Args) > 5 {
		raw, err = net.DialTimeout("tcp", os.Args[5], 8*time.Second)
		if err != nil {
			fmt.Println("proxy error:", err)
			os.Exit(2)
		}
		fmt.Fprintf(raw, "CONNECT %s:%s HTTP/1.1\r\nHost: %s:%s\r\n\r\n", host, port, host, port)
		br := bufio.NewReader(raw)
		resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"})
		if err != nil || resp.StatusCode != 200 {
			fmt.Println("proxy refused:", err, resp)
			os.Exit(2)
		}
	} else {
		raw, err = net.DialTimeout("tcp", net.JoinHostPort(host, port), 8*time.Second)
		if err != nil {
			fmt.Println("connect error:", err)
			os.Exit(2)
		}
	}
	raw.SetDeadline(time.Now().Add(8 * time.Second))
	c := tls.Client(raw, cfg)
	if err := c.Handshake(); err != nil {
		fmt.Println("handshake failed:", err)
		c.Close()
		os.Exit(1)
	}
	fmt.Printf("handshake ok: %x\n", c.ConnectionState().Version)
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\nUser-Agent: pinwatch-goclient\r\nConnection: close\r\n\r\n", host)
	line, _ := bufio.NewReader(c).ReadString('\n')
	fmt.Println("response:", line)
	c.Close()
}
