"""A direct connection authenticated by the SSO login. (The test's service
advertises no address of its own, so its host and port are given.)"""
import os

from switchyard.compat.radkit.sync import Client

with Client.create() as client:
    client.sso_login(os.environ["REF_EMAIL"])
    service = client.service_direct_with_sso(
        os.environ["REF_SERIAL"], host=os.environ["REF_HOST"], port=int(os.environ["REF_PORT"])
    )
    print(service.inventory)
