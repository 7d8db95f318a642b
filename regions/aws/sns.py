"""Amazon SNS: sending an SMS to a phone number."""

from __future__ import annotations

from .session import AwsError, aws_errors, client

SmsError = AwsError


@aws_errors
def publish_sms(*, region: str, phone_number: str, message: str, sender_id: str = "") -> str:
    """Send ``message`` as a transactional SMS to ``phone_number`` (E.164). Returns SNS's
    message id. Raises AwsError (``retryable`` for throttling and 5xx)."""
    attributes = {"AWS.SNS.SMS.SMSType": {"DataType": "String", "StringValue": "Transactional"}}
    if sender_id:
        attributes["AWS.SNS.SMS.SenderID"] = {"DataType": "String", "StringValue": sender_id}
    response = client("sns", region).publish(
        PhoneNumber=phone_number, Message=message, MessageAttributes=attributes
    )
    return response["MessageId"]
