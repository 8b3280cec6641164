import smtplib, sys, time, threading, base64
from email.message import EmailMessage
p7s = open(sys.argv[1], 'rb').read()
threads, per = int(sys.argv[2]), int(sys.argv[3])
m = EmailMessage(); m['From']='ext@example.kz'; m['To']='bench@localhost'; m['Subject']='signed contract'
m.set_content('Contract attached.'); m.add_attachment(p7s, maintype='application', subtype='pkcs7-signature', filename='contract.p7s')
raw = m.as_bytes()
def run():
    s = smtplib.SMTP('127.0.0.1', 2525)
    for i in range(per): s.sendmail('ext@example.kz', ['bench@localhost'], raw)
    s.quit()
t0=time.time(); ts=[threading.Thread(target=run) for _ in range(threads)]
[t.start() for t in ts]; [t.join() for t in ts]
dt=time.time()-t0; n=threads*per
print(f"{n} signed messages ({len(raw)} bytes) over {threads} sessions in {dt:.2f}s = {n/dt:.0f} msg/s")
