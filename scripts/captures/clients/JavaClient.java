// Java 17 client (JSSE via HttpsURLConnection) for scripts/captures/generalise.py.
// usage: java -cp DIR JavaClient HOST CAFILE TLS(1.2|1.3|any)
// The trust store holds only CAFILE; direct connections only (transparent proxy).
import java.io.FileInputStream;
import java.io.InputStream;
import java.net.URL;
import java.security.KeyStore;
import java.security.cert.Certificate;
import java.security.cert.CertificateFactory;
import javax.net.ssl.HttpsURLConnection;
import javax.net.ssl.SSLContext;
import javax.net.ssl.TrustManagerFactory;

public class JavaClient {
    public static void main(String[] a) throws Exception {
        String host = a[0];
        KeyStore ks = KeyStore.getInstance(KeyStore.getDefaultType());
        ks.load(null, null);
        try (InputStream in = new FileInputStream(a[1])) {
            int i = 0;
            for (Certificate c : CertificateFactory.getInstance("X.509").generateCertificates(in)) {
                ks.setCertificateEntry("ca" + i++, c);
            }
        }
        TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
        tmf.init(ks);
        // a TLSv1.2 context offers 1.2 at most; a TLSv1.3 or TLS one offers 1.3 and 1.2
        String proto = a[2].equals("1.2") ? "TLSv1.2" : a[2].equals("1.3") ? "TLSv1.3" : "TLS";
        SSLContext ctx = SSLContext.getInstance(proto);
        ctx.init(null, tmf.getTrustManagers(), null);
        HttpsURLConnection c = (HttpsURLConnection) new URL("https://" + host + "/").openConnection();
        c.setSSLSocketFactory(ctx.getSocketFactory());
        c.setConnectTimeout(8000);
        c.setReadTimeout(8000);
        try {
            System.out.println("status " + c.getResponseCode());
            c.getInputStream().readAllBytes();
        } catch (Exception e) {
            System.out.println("error: " + e);
            System.exit(1);
        }
    }
}
