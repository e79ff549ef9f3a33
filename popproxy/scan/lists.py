"""Small, general policy lists the rules use (none is derived from any evaluation corpus).

Each list names well-known public services or file types; they change slowly and an operator can
read them in one screen.
"""

from __future__ import annotations

# Link shorteners: the visible link says nothing about where it goes.  Widely used by marketing
# too, so a shortener alone is weak evidence.
SHORTENERS: frozenset[str] = frozenset({
    "bit.ly", "bitly.com", "t.co", "tinyurl.com", "goo.gl", "ow.ly", "is.gd", "buff.ly",
    "rebrand.ly", "cutt.ly", "shorturl.at", "t.ly", "rb.gy", "tiny.cc", "v.gd", "s.id",
    "lnkd.in", "bl.ink", "short.io", "shorte.st", "adf.ly", "x.co", "qrco.de", "tr.ee",
    "urlz.fr", "clck.ru", "u.to", "t.me", "2u.pm", "bit.do", "shrtco.de", "surl.li",
    "urlr.me", "linktr.ee",
})

# Hosts shared by many tenants where the tenant lives in the path (storage.googleapis.com/<bucket>,
# ipfs.io/ipfs/<cid>, bit.ly/<code>).  Blocklist feeds list such hosts because one tenant was
# malicious; a hit on the bare host therefore says little about the link at hand.
PATH_TENANTED_HOSTS: frozenset[str] = SHORTENERS | frozenset({
    "sites.google.com", "docs.google.com", "drive.google.com", "forms.gle", "script.google.com",
    "storage.googleapis.com", "firebasestorage.googleapis.com", "storage.cloud.google.com",
    "ipfs.io", "dweb.link", "cloudflare-ipfs.com", "gateway.pinata.cloud", "nftstorage.link",
    "onedrive.live.com", "1drv.ms", "dropbox.com", "www.dropbox.com", "dl.dropboxusercontent.com",
    "s3.amazonaws.com", "github.com", "raw.githubusercontent.com", "gitlab.com",
    "forms.office.com", "forms.microsoft.com", "sway.office.com", "sway.cloud.microsoft",
    "onenote.com", "www.canva.com", "canva.com", "www.notion.so", "notion.so", "notion.site",
    "docs.zoho.com", "forms.zohopublic.com", "linktr.ee", "t.me", "telegra.ph",
    "www.evernote.com", "wetransfer.com", "we.tl", "mega.nz", "app.box.com", "box.com",
    "www.jotform.com", "form.jotform.com", "typeform.com", "airtable.com", "padlet.com",
    "docs.googleusercontent.com", "translate.google.com", "translate.goog",
    "www.google.com", "google.com", "l.facebook.com", "lnkd.in", "www.linkedin.com",
})

# Registrable domains whose subdomains belong to different tenants but which the ICANN list
# does not split (x.weebly.com is a customer, not Weebly).  A feed entry under these names only
# its own host, never the whole domain.
SHARED_REGISTRABLE: frozenset[str] = frozenset({
    "google.com", "googleapis.com", "googleusercontent.com", "microsoft.com", "live.com",
    "office.com", "sharepoint.com", "amazonaws.com", "cloudfront.net", "azurewebsites.net",
    "windows.net", "weebly.com", "wixsite.com", "wix.com", "square.site", "webflow.io",
    "yolasite.com", "godaddysites.com", "mystrikingly.com", "jimdosite.com", "weeblysite.com",
    "000webhostapp.com", "blogspot.com", "wordpress.com", "tumblr.com", "duckdns.org",
    "ngrok.io", "ngrok-free.app", "zohopublic.com", "dropbox.com", "box.com", "canva.com",
    "notion.site", "ipfs.io", "dweb.link", "eth.limo", "yahoo.com", "gmail.com", "outlook.com",
    "apple.com", "icloud.com", "adobe.com", "github.com", "gitlab.com", "bit.ly", "t.co",
    "linkedin.com", "facebook.com", "instagram.com", "twitter.com", "x.com", "telegram.org",
    "t.me", "mailchimp.com", "list-manage.com", "sendgrid.net", "hubspot.com",
    "hs-sites.com", "myshopify.com", "shopify.com", "onmicrosoft.com",
    "firebaseapp.com", "web.app", "glitch.me", "repl.co", "replit.dev", "replit.app",
    "workers.dev", "pages.dev", "vercel.app", "netlify.app", "herokuapp.com", "r2.dev",
    "azureedge.net", "akamaized.net", "fastly.net", "cdn77.org", "b-cdn.net", "tripod.com",
    "angelfire.com", "freehostia.com", "byethost.com", "infinityfreeapp.com", "epizy.com",
})

# Object storage and static hosting where anyone can upload a page (the bucket is in the host or
# the path).  Mail links to images there are normal; links to an HTML page there mean a page
# hosted without a site of its own, which is how phishing kits are published.
STORAGE_SUFFIXES: tuple[str, ...] = (
    "storage.googleapis.com", "firebasestorage.googleapis.com", "storage.cloud.google.com",
    "blob.core.windows.net", "web.core.windows.net", "digitaloceanspaces.com", "r2.dev",
    "amazonaws.com", "backblazeb2.com", "wasabisys.com", "linodeobjects.com", "ipfs.io",
    "dweb.link", "cloudflare-ipfs.com", "ipfs.w3s.link", "myqcloud.com", "aliyuncs.com",
)

# Free mailbox providers: anyone can sign up, so a brand name in the display name of such a
# sender is an impersonation.
FREEMAIL_DOMAINS: frozenset[str] = frozenset({
    "gmail.com", "googlemail.com", "outlook.com", "hotmail.com", "live.com", "msn.com",
    "yahoo.com", "ymail.com", "aol.com", "icloud.com", "me.com", "gmx.com", "gmx.net",
    "gmx.de", "web.de", "mail.com", "mail.ru", "yandex.ru", "yandex.com", "proton.me",
    "protonmail.com", "zoho.com", "qq.com", "163.com", "126.com", "sina.com", "naver.com",
    "hotmail.co.uk", "yahoo.co.uk", "outlook.fr", "hotmail.fr", "laposte.net", "orange.fr",
    "libero.it", "rediffmail.com", "tutanota.com",
})

# File extensions Windows (or macOS/Linux desktops) will run, open as a disk image, or hand to a
# script host on double-click.  Microsoft's Outlook "Level 1" blocked list is the precedent.
# Not ".bin": the name says nothing about the content ("data.bin", "firmware.bin": whatever
# its bytes are), so such a file is judged by its bytes (attach-executable, archive and macro
# checks) and a benign one is neither scored nor removed (neither Outlook nor Gmail block it).
RISKY_EXTENSIONS: frozenset[str] = frozenset({
    "exe", "scr", "com", "pif", "bat", "cmd", "vbs", "vbe", "js", "jse", "wsf", "wsh", "ws",
    "hta", "msi", "msp", "mst", "cpl", "jar", "ps1", "psm1", "reg", "lnk", "inf", "dll",
    "iso", "img", "vhd", "vhdx", "appx", "appxbundle", "msix", "application", "gadget",
    "chm", "hlp", "scf", "url", "sct", "xll", "xlam", "ppam", "one", "apk", "app", "dmg",
    "pkg", "command", "sh", "elf", "run",
})

# Extensions of documents people expect to open safely; "invoice.pdf.exe" pairs one of these
# with a risky extension to fool the eye.
DECOY_EXTENSIONS: frozenset[str] = frozenset({
    "pdf", "doc", "docx", "xls", "xlsx", "ppt", "pptx", "txt", "rtf", "jpg", "jpeg", "png",
    "gif", "mp3", "mp4", "wav", "htm", "html", "csv", "zip", "odt", "ods",
})
